"""``PretrainingStep``: the model outputs that several objectives share, computed once per batch.

Objectives ask for outputs by name (``step.output("cells")``); each is computed on first use and
reused, so e.g. masked gene modelling and the cell–cell loss share one encoding of the masked
cells, and the cell–text and matching losses one text encoding and one similarity matrix.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_langcell.data.collate import unpack_cell_states
from lightning_langcell.objectives.contrastive import cell_text_contrastive_loss


class PretrainingStep:
    """One batch's shared outputs for the objectives of a pre-training step.

    Args:
        model: a ``LangCellModel`` (``encode_cells``, ``encode_texts``, ``temperature``, heads).
        batch: the collated batch.
        generator: RNG of this step's random choices (hard negatives), seeded by the task.
        settings: the task's objective settings (e.g. ``cell_cell_temperature``).

    Outputs:
        ``masked_cells``: (hidden [B, L, H], or [1, T, H] for packed cells, embedding [B, E]) of the MGM-masked cells
        (``mgm_input_ids`` when present, else ``input_ids``: the first cell–cell view);
        ``cells``: the same for the unmasked cells (second view; cell side of CTC and CTM);
        ``texts``: (CLS hidden, embedding) of the cells' texts;
        ``cell_text``: ``(loss, ContrastiveStats)`` of the cell–text contrastive loss (logs the
        temperature and its statistics into :attr:`logs`).
    """

    OUTPUTS = ("masked_cells", "cells", "texts", "cell_text")

    def __init__(
        self,
        model: Any,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        settings: dict[str, Any] | None = None,
    ):
        self.model = model
        self.batch = batch
        self.generator = generator
        self.settings = dict(settings or {})
        self.logs: dict[str, torch.Tensor] = {}
        self._cache: dict[str, Any] = {}

    def output(self, name: str) -> Any:
        """The named output (one of :attr:`OUTPUTS`), computed on first use."""
        if name not in self._cache:
            self._cache[name] = getattr(self, f"_{name}")()
        return self._cache[name]

    @property
    def packed(self) -> bool:
        """Whether the batch holds packed cells (``CellBatchCollator(packed=True)``)."""
        return "cu_seqlens" in self.batch

    def padded_cells(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell states of this batch as padded [B, L, H] with their attention mask [B, L]."""
        if self.packed:
            return unpack_cell_states(hidden, self.batch["cu_seqlens"])
        return hidden, self.batch["attention_mask"]

    def _encode_cells(self, input_ids: torch.Tensor):
        batch = self.batch
        packing = {key: batch[key] for key in ("cu_seqlens", "max_seqlen", "position_ids") if key in batch}
        return self.model.encode_cells(input_ids, batch["attention_mask"], **packing)

    def _masked_cells(self):
        return self._encode_cells(self.batch.get("mgm_input_ids", self.batch["input_ids"]))

    def _cells(self):
        return self._encode_cells(self.batch["input_ids"])

    def _texts(self):
        return self.model.encode_texts(self.batch["text_input_ids"], self.batch["text_attention_mask"])

    def _cell_text(self):
        _, cell_embedding = self.output("cells")
        _, text_embedding = self.output("texts")
        temperature = self.model.temperature()
        loss, stats = cell_text_contrastive_loss(cell_embedding, text_embedding, self.batch["text_ids"], temperature)
        self.logs["temperature"] = temperature.detach()
        self.logs.update(stats.scalars())
        return loss, stats
