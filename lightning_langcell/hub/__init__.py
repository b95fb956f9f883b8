"""Checkpoint loaders and converters (official LangCell layout, HF BERT initialisation)."""

from lightning_langcell.hub.bert_init import (
    load_bert_into_text_encoder,
    text_config_from_bert,
    text_encoder_from_bert,
)
from lightning_langcell.hub.official import export_official, load_official, load_official_with_report
from lightning_langcell.hub.state_dicts import LoadReport

__all__ = [
    "LoadReport",
    "export_official",
    "load_bert_into_text_encoder",
    "load_official",
    "load_official_with_report",
    "text_config_from_bert",
    "text_encoder_from_bert",
]
