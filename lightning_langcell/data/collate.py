"""Batch collation: ``<cls>`` + ranked genes, right padding to the batch maximum (or packed into one
row without padding), masks and texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from lightning_langcell.data.masking import mask_genes
from lightning_langcell.tokenization import CLS_ID, PAD_ID


def pad_token_lists(
    token_lists: Sequence[np.ndarray], prefix: int | None, max_length: int, pad_id: int = PAD_ID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the longest one (capped at ``max_length`` with the prefix).

    Returns ``input_ids`` and ``attention_mask`` as int64 tensors of shape [B, L].
    """
    room = max_length - (prefix is not None)
    lengths = [min(len(tokens), room) + (prefix is not None) for tokens in token_lists]
    width = max(max(lengths, default=1), 1)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, (tokens, length) in enumerate(zip(token_lists, lengths)):
        start = 0
        if prefix is not None:
            input_ids[row, 0] = prefix
            start = 1
        input_ids[row, start:length] = torch.as_tensor(np.asarray(tokens[: length - start]), dtype=torch.long)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


@dataclass
class CellBatchCollator:
    """Turns dataset items into model batches.

    Items are dicts with ``index`` (cell row), ``epoch``, ``input_ids`` (ranked gene tokens
    without ``<cls>``) and optionally ``text_tokens`` (token ids of the cell's text),
    ``text_id`` (id of the distinct text) and ``label`` (class index, -100 when unknown).
    The model sees ``<cls>`` + the first ``max_length - 1`` genes (2047 for the official 2048).
    With ``mgm_probability > 0`` the batch also carries ``mgm_input_ids``/``mgm_labels``,
    masked reproducibly per (seed, epoch, index).

    With ``packed`` the cells are concatenated without padding: ``input_ids`` (and the MGM fields)
    are [1, T] for the T real tokens, ``attention_mask`` [1, T] all ones, ``position_ids`` [1, T]
    restart at 0 in every cell, ``cu_seqlens`` int32 [B+1] delimits the cells and ``max_seqlen``
    (an int) is the longest. Tokens and masks are the padded batch's at its real positions.
    """

    max_length: int = 2048
    mgm_probability: float = 0.0
    seed: int = 0
    text_pad_id: int = 0
    vocab_size: int = 25427
    packed: bool = False

    def batch_fields(self, labels: bool, texts: bool) -> set[str]:
        """The keys of the batches this collator makes from items with/without labels and texts."""
        fields = {"input_ids", "attention_mask", "index"}
        if labels:
            fields.add("labels")
        if texts:
            fields |= {"text_input_ids", "text_attention_mask", "text_ids"}
        if self.mgm_probability > 0:
            fields |= {"mgm_input_ids", "mgm_labels"}
        if self.packed:
            fields |= set(PACKED_FIELDS)
        return fields

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_token_lists(
            [item["input_ids"] for item in items], CLS_ID, self.max_length
        )
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        }
        if "label" in items[0]:
            batch["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
        if "text_tokens" in items[0]:
            text_ids, text_mask = pad_token_lists(
                [item["text_tokens"] for item in items], None, 10**9, pad_id=self.text_pad_id
            )
            batch["text_input_ids"], batch["text_attention_mask"] = text_ids, text_mask
            batch["text_ids"] = torch.tensor([item["text_id"] for item in items], dtype=torch.long)
        if self.mgm_probability > 0:
            batch["mgm_input_ids"], batch["mgm_labels"] = mask_genes(
                input_ids,
                attention_mask,
                probability=self.mgm_probability,
                vocab_size=self.vocab_size,
                seed=self.seed,
                epoch=int(items[0].get("epoch", 0)),
                indices=batch["index"],
            )
        return pack_cells(batch) if self.packed else batch


PACKED_FIELDS = ("position_ids", "cu_seqlens", "max_seqlen")
CELL_TOKEN_FIELDS = ("input_ids", "mgm_input_ids", "mgm_labels")


def pack_cells(batch: dict[str, Any]) -> dict[str, Any]:
    """A padded cell batch → the same cells packed into one row (see :class:`CellBatchCollator`)."""
    real = batch["attention_mask"].bool()
    lengths = real.sum(1)
    packed = dict(batch)
    for field in CELL_TOKEN_FIELDS:
        if field in batch:
            packed[field] = batch[field][real].unsqueeze(0)
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    packed["attention_mask"] = torch.ones((1, total), dtype=torch.long)
    packed["position_ids"] = (torch.arange(total) - torch.repeat_interleave(starts, lengths)).unsqueeze(0)
    packed["cu_seqlens"] = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(lengths, 0).to(torch.int32)])
    packed["max_seqlen"] = int(lengths.max()) if lengths.numel() else 0
    return packed


def unpack_cell_states(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed states [1, T, H] → (padded states [B, L, H] zero-filled, attention mask [B, L] 1/0)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    width = int(lengths.max())
    mask = torch.arange(width, device=hidden.device).unsqueeze(0) < lengths.to(hidden.device).unsqueeze(1)
    padded = hidden.new_zeros(lengths.numel(), width, hidden.shape[-1])
    padded[mask] = hidden[0]
    return padded, mask.long()
