"""Start the text encoder from a local HF BERT folder (e.g. BiomedBERT, all-MiniLM-L6-v2).

Matching weights load by name (a ``bert.`` prefix is dropped); token-type embeddings, pooler and
task heads are unused; the cross-attention layers are freshly initialised. Each call returns a
``LoadReport`` listing loaded / newly initialised / unused tensors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.state_dicts import (
    WORD_EMBEDDINGS,
    LoadReport,
    load_matching,
    read_json,
    read_weights_dir,
    strip_prefix,
)
from lightning_langcell.models.config import TextEncoderConfig
from lightning_langcell.models.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def text_config_from_bert(
    directory: str | os.PathLike, encoder_width: int, vocab_size: int | None = None
) -> TextEncoderConfig:
    """The text-encoder shape of the BERT in ``directory`` (its ``config.json``), with cross-attention
    reading ``encoder_width``-wide cell states. ``vocab_size`` may enlarge the vocabulary (added tokens)."""
    config = read_json(Path(directory) / "config.json")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if key not in config:
            raise CheckpointError(f"{Path(directory) / 'config.json'} lacks {key!r}.", "Point to an HF BERT folder.")
    text = TextEncoderConfig.from_dict({**config, "encoder_width": encoder_width})
    if vocab_size is not None:
        if vocab_size < text.vocab_size:
            raise CheckpointError(
                f"vocab_size {vocab_size} is smaller than the BERT's {text.vocab_size} rows.",
                "Use the BERT's tokenizer (possibly with added tokens) and its size.",
            )
        text.vocab_size = vocab_size
    return text


def load_bert_into_text_encoder(encoder: TextEncoder, directory: str | os.PathLike) -> LoadReport:
    """Copy the matching BERT weights of ``directory`` into ``encoder``; cross-attention stays fresh.

    Extra vocabulary rows of ``encoder`` (added tokens) start as the mean word embedding.
    """
    state, path = read_weights_dir(directory)
    state = strip_prefix(state, "bert.")
    for key in BUFFERS:
        state.pop(key, None)
    report = LoadReport()
    if WORD_EMBEDDINGS in state:
        table, rows = state[WORD_EMBEDDINGS], encoder.config.vocab_size
        if table.shape[0] < rows:
            extra = rows - table.shape[0]
            state[WORD_EMBEDDINGS] = torch.cat([table, table.mean(dim=0, keepdim=True).expand(extra, -1)])
            report.notes.append(f"{path}: appended {extra} word rows (added tokens) as the mean embedding.")
    report.extend(load_matching(encoder, state, path, may_initialize=("crossattention.",)))
    logger.info("Text encoder initialised from %s:\n%s", path, report)
    return report


def text_encoder_from_bert(
    directory: str | os.PathLike, encoder_width: int, vocab_size: int | None = None
) -> tuple[TextEncoder, LoadReport]:
    """A ``TextEncoder`` shaped like and initialised from the BERT in ``directory``, plus its report."""
    encoder = TextEncoder(text_config_from_bert(directory, encoder_width, vocab_size))
    return encoder, load_bert_into_text_encoder(encoder, directory)


def hf_bert_config(path: Path) -> dict | None:
    """The ``config.json`` of the HF BERT folder ``path`` (``model_type`` bert or a ``Bert*``
    architecture); None when ``path`` is no such folder."""
    config_path = path / "config.json"
    if not path.is_dir() or not config_path.is_file():
        return None
    config = read_json(config_path)
    architectures = " ".join(config.get("architectures") or [])
    return config if config.get("model_type") == "bert" or "Bert" in architectures else None
