"""Checkpoints: the format handlers (ours, official LangCell layout, Geneformer 30M, Lightning .ckpt,
HF BERT), loading by name or path, saving, exporting and the registry of named checkpoints.

Importing this package registers the built-in formats (``hub.formats``, in detection order) and
the functions behind ``LangCellModel.from_pretrained`` / ``save_pretrained`` / ``export_official``.
"""

from lightning_langcell.hub.bert_init import (
    load_bert_into_text_encoder,
    text_config_from_bert,
    text_encoder_from_bert,
)
from lightning_langcell.hub.download import download_checkpoint
from lightning_langcell.hub.formats import (
    CheckpointFormat,
    detect_format,
    register_format,
    registered_formats,
    unregister_format,
)
from lightning_langcell.hub.geneformer import GENEFORMER_FORMAT
from lightning_langcell.hub.hf_bert import HF_BERT_FORMAT
from lightning_langcell.hub.lightning_ckpt import LIGHTNING_FORMAT
from lightning_langcell.hub.loading import (
    load_gene_vocabulary_for,
    load_model,
    load_model_with_report,
    load_text_tokenizer_for,
)
from lightning_langcell.hub.official import OFFICIAL_FORMAT, export_official, load_official, load_official_with_report
from lightning_langcell.hub.pretrained import OURS_FORMAT, save_pretrained
from lightning_langcell.hub.push import push_to_hub
from lightning_langcell.hub.state_dicts import LoadReport
from lightning_langcell.models.checkpoint_io import register_checkpoint_hooks
from lightning_langcell.models.langcell import LangCellModel

BUILTIN_FORMATS = (OURS_FORMAT, OFFICIAL_FORMAT, GENEFORMER_FORMAT, LIGHTNING_FORMAT, HF_BERT_FORMAT)
for _handler in BUILTIN_FORMATS:
    register_format(_handler)
register_checkpoint_hooks(from_pretrained=load_model, save_pretrained=save_pretrained, export_official=export_official)

__all__ = [
    "BUILTIN_FORMATS",
    "CheckpointFormat",
    "LangCellModel",
    "LoadReport",
    "detect_format",
    "download_checkpoint",
    "export_official",
    "load_bert_into_text_encoder",
    "load_gene_vocabulary_for",
    "load_model",
    "load_model_with_report",
    "load_official",
    "load_official_with_report",
    "load_text_tokenizer_for",
    "push_to_hub",
    "register_format",
    "registered_formats",
    "save_pretrained",
    "text_config_from_bert",
    "text_encoder_from_bert",
    "unregister_format",
]
