"""On-disk cache of class-text embeddings, so thousands of class texts are encoded once per
checkpoint and text set.

An entry is ``<cache dir>/<key>.safetensors`` holding the CTC embeddings [C, E] (fp32). The key
digests (BLAKE3) everything the embeddings depend on:

- the text side's weights (every ``text_bert.*`` and ``text_proj.*`` tensor: names, dtypes,
  shapes, bytes), so other weights never read this entry;
- the tokenized texts (``input_ids`` and ``attention_mask``): the texts, the tokenizer and the
  maximum text length at once;
- the autocast dtype in force (bf16-computed embeddings are not served to fp32 runs).

Entries are written atomically (temp file + rename); an unreadable, mismatching or non-finite
entry is recomputed and replaced. The default directory is
``<cache_root()>/class_text_embeddings`` (``$LANGCELL_CACHE`` or ``~/.cache/lightning_langcell``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from blake3 import blake3

from lightning_langcell.data.corpus import cache_root
from lightning_langcell.inference.zero_shot import ClassTexts, encode_class_texts
from lightning_langcell.io_utils import atomic_file
from lightning_langcell.models.langcell import LangCellModel

CACHE_FORMAT = "1"
TEXT_CHUNK_SIZE = 256  # class texts encoded at once (bounds memory with thousands of classes)
TEXT_WEIGHT_PREFIXES = ("text_bert.", "text_proj.")


def class_text_cache_dir() -> Path:
    """Where class-text embeddings are cached: ``<cache root>/class_text_embeddings``."""
    return cache_root() / "class_text_embeddings"


def _update_with_tensor(hasher, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def text_weights_digest(model: LangCellModel) -> str:
    """Hex digest of the text encoder's and text projection's weights (what text embeddings use)."""
    hasher = blake3()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(TEXT_WEIGHT_PREFIXES):
            _update_with_tensor(hasher, name, tensor)
    return hasher.hexdigest()


def class_text_key(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> str:
    """Cache key of the embeddings of these tokenized texts under this model (see the module doc)."""
    hasher = blake3(f"format {CACHE_FORMAT}|{text_weights_digest(model)}|".encode())
    device = input_ids.device.type
    autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    hasher.update(f"autocast {autocast}|".encode())
    _update_with_tensor(hasher, "input_ids", input_ids.long())
    _update_with_tensor(hasher, "attention_mask", attention_mask.long())
    return hasher.hexdigest()


def load_entry(path: Path, key: str, n_classes: int) -> torch.Tensor | None:
    """The cached embeddings [C, E] at ``path``, or None when missing, unreadable or mismatching."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
            embedding = handle.get_tensor("embedding")
    except Exception:  # noqa: BLE001 - any damage to a cache entry means: recompute it
        return None
    if embedding.ndim != 2 or embedding.shape[0] != n_classes or not torch.isfinite(embedding).all():
        return None
    return embedding


def save_entry(path: Path, key: str, embedding: torch.Tensor) -> None:
    """Write the embeddings atomically (safetensors, the key in its metadata)."""
    from safetensors.torch import save

    payload = save({"embedding": embedding.detach().float().cpu().contiguous()},
                   metadata={"key": key, "format": CACHE_FORMAT})
    with atomic_file(path) as handle:
        handle.write(payload)


def cached_text_embeddings(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           compute, cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Embeddings [C, E] of tokenized class texts: read from the cache, else computed and stored.

    ``compute``: a zero-argument function returning the embeddings [C, E] (called on a miss).
    ``cache_dir``: None for :func:`class_text_cache_dir`. Returned on ``input_ids``' device, fp32.
    """
    key = class_text_key(model, input_ids, attention_mask)
    path = Path(cache_dir if cache_dir is not None else class_text_cache_dir()) / f"{key}.safetensors"
    embedding = load_entry(path, key, input_ids.shape[0])
    if embedding is None:
        embedding = compute().float()
        save_entry(path, key, embedding)
    return embedding.to(input_ids.device)


def cached_class_texts(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       cache: bool | str | os.PathLike = True, chunk_size: int = TEXT_CHUNK_SIZE) -> ClassTexts:
    """:class:`ClassTexts` of tokenized class texts, their embeddings through the cache.

    ``cache``: True (the default directory), a directory, or False (always encode, write nothing).
    Texts are encoded ``chunk_size`` at a time on a miss.
    """
    def compute() -> torch.Tensor:
        return encode_class_texts(model, input_ids, attention_mask, chunk_size).embedding

    if cache is False:
        return encode_class_texts(model, input_ids, attention_mask, chunk_size)
    embedding = cached_text_embeddings(model, input_ids, attention_mask, compute, None if cache is True else cache)
    return ClassTexts(input_ids, attention_mask, embedding)
