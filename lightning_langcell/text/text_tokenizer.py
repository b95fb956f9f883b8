"""Text tokenizer of the text encoder (uncased BERT WordPiece) and text-length checks.

Without a path, :func:`load_text_tokenizer` returns the bundled small WordPiece vocabulary
(``resources/text_tokenizer/vocab.txt``, built from the bundled ontology text by
``scripts/build_text_vocab.py``) — an offline stand-in for the BiomedBERT/PubMedBERT
vocabulary that the released LangCell text encoder uses (30,522 entries + 2 added tokens).
Both put ``[PAD]``=0, ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4.
"""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from lightning_langcell.errors import LangCellInputError

TEXT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, PubMedBERT order
BLIP_BOS_TOKEN = "[DEC]"  # added by the official code as bos_token (id = vocab size)
BLIP_ENCODER_TOKEN = "[ENC]"  # added as an additional special token (id = vocab size + 1)
TEXT_MAX_LENGTH = 512  # position embeddings of the BiomedBERT-shaped text encoder
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def bundled_vocab_dir() -> Path:
    """Folder holding the bundled ``vocab.txt``."""
    return Path(str(resources.files("lightning_langcell.text") / "resources" / "text_tokenizer"))


def load_text_tokenizer(path: str | os.PathLike | None = None, add_blip_tokens: bool = False,
                        max_length: int = TEXT_MAX_LENGTH) -> PreTrainedTokenizerBase:
    """An uncased BERT WordPiece tokenizer, read offline.

    Args:
        path: a local HF tokenizer folder (``AutoTokenizer`` with ``local_files_only``), a
            folder or file ``vocab.txt`` (plain uncased BERT WordPiece), or a hub name already in
            the local cache. None: the bundled vocabulary.
        add_blip_tokens: add ``[DEC]`` as bos token and ``[ENC]`` as an additional special
            token, as the official code does (the released text model has 30,524 rows: 30,522 +
            these two). Inference does not use them; a tokenizer that has them already is unchanged.
        max_length: ``model_max_length`` of the tokenizer (the text encoder's max positions).
    """
    if path is None:
        tokenizer = BertTokenizerFast.from_pretrained(
            bundled_vocab_dir(), local_files_only=True, do_lower_case=True, model_max_length=max_length)
    else:
        tokenizer = _load_local(Path(path), str(path), max_length)
    if add_blip_tokens:
        tokenizer.add_special_tokens({"bos_token": BLIP_BOS_TOKEN})
        tokenizer.add_special_tokens({"additional_special_tokens": [BLIP_ENCODER_TOKEN]})
    return tokenizer


def _load_local(path: Path, name: str, max_length: int) -> PreTrainedTokenizerBase:
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~"))):
        raise LangCellInputError(f"Text tokenizer path {path} does not exist.",
                                 "Check the path, or pass None for the bundled vocabulary.")
    if path.is_file():
        if path.name != "vocab.txt":
            raise LangCellInputError(
                f"{path} is not a tokenizer folder or a file named vocab.txt.",
                "Pass the folder of a saved HF tokenizer, or a WordPiece vocab.txt.")
        path = path.parent
    if path.is_dir() and not any((path / file).is_file() for file in _TOKENIZER_FILES):
        if not (path / "vocab.txt").is_file():
            raise LangCellInputError(f"{path} holds neither a HF tokenizer nor a vocab.txt.",
                                     "Save one there with tokenizer.save_pretrained(path).")
        return BertTokenizerFast.from_pretrained(
            path, local_files_only=True, do_lower_case=True, model_max_length=max_length)
    try:
        return AutoTokenizer.from_pretrained(
            path if path.is_dir() else name, local_files_only=True, model_max_length=max_length)
    except (OSError, ValueError) as error:
        raise LangCellInputError(
            f"Could not load a text tokenizer from {name!r} offline ({error}).",
            "Pass a local folder with tokenizer files or vocab.txt (nothing is downloaded), "
            "or None for the bundled vocabulary.") from error


def text_length_check(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                      max_length: int = TEXT_MAX_LENGTH) -> np.ndarray:
    """Token counts (with ``[CLS]``/``[SEP]``) of ``texts``, shape ``[len(texts)]`` int64.

    Warns (never raises) when some texts exceed ``max_length``: they will be truncated to
    their first ``max_length`` tokens, as the official tokenizer call does.
    """
    texts = list(texts)
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(texts))
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        warnings.warn(
            f"{too_long.size} of {len(texts)} text(s) exceed {max_length} tokens (longest "
            f"{int(lengths.max())}, e.g. {texts[too_long[0]][:80]!r}...); they are truncated "
            f"to {max_length} tokens.", stacklevel=2)
    return lengths


def tokenize_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                   max_length: int = TEXT_MAX_LENGTH, return_tensors: str | None = "pt") -> dict:
    """The official tokenizer call: ``padding=True`` (to the longest), ``truncation=True``.

    Returns ``input_ids`` and ``attention_mask`` of shape ``[len(texts), longest]``, right-
    padded with ``[PAD]``; no ``token_type_ids`` (the text encoder has none). Warns on
    truncation (:func:`text_length_check`).
    """
    text_length_check(texts, tokenizer, max_length)
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_token_type_ids=False, return_tensors=return_tensors)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
