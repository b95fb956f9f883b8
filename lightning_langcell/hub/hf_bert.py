"""HF BERT folders that are not Geneformer (BiomedBERT, MiniLM, ...): text encoders, not LangCell models.

Detected so that loading one says what to do with it (``text_init`` of a task, ``text_source`` of
a Geneformer load, see ``hub.bert_init``), and so that its own tokenizer can be found.
"""

from __future__ import annotations

from pathlib import Path

from lightning_langcell.hub.bert_init import hf_bert_config
from lightning_langcell.hub.formats import CheckpointFormat, refusal
from lightning_langcell.hub.geneformer import is_geneformer_dir


def is_hf_bert_dir(path: Path) -> bool:
    return hf_bert_config(path) is not None and not is_geneformer_dir(path)


def hf_bert_text_tokenizer(path: Path):
    from lightning_langcell.text import load_text_tokenizer

    return load_text_tokenizer(path)


HF_BERT_FORMAT = CheckpointFormat(
    name="hf_bert",
    description="an HF BERT text encoder folder (only as text_init / text_source)",
    detect=is_hf_bert_dir,
    load=refusal("{path} is a BERT without LangCell parts (a text encoder such as BiomedBERT), not a LangCell model.",
                 "Use it as text_init= of a task, or as text_source= when loading a Geneformer cell encoder."),
    text_tokenizer=hf_bert_text_tokenizer,
)
