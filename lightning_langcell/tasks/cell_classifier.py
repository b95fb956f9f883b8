"""LangCell-CE: a linear cell-type head on the cell encoder, fine-tuned or as a linear probe."""

from __future__ import annotations

from typing import Any, Sequence, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.langcell import pool_cell_states
from lightning_langcell.tasks.base import AdamWSchedule, build_model, freeze_modules
from lightning_langcell.tasks.classify import CellClassificationTask, masked_cross_entropy

FEATURES = ("cls", "pooled", "embedding")


class CellTypeClassifier(CellClassificationTask):
    """Cell encoder + ``nn.Linear`` head over the classes of the data module.

    Only the cell side of the LangCell model is kept (``cell_bert``, and ``cell_proj`` for
    ``features="embedding"``); the text encoder and heads are dropped after loading.

    Args:
        model: preset name or ``LangCellConfig`` dict (ignored with ``init_from``).
        init_from: checkpoint to start from (official LangCell folder, our ``.ckpt``/format).
        features: what the head reads: ``"cls"`` — the ``<cls>`` hidden state (cell hidden size,
            512 for LangCell; the official LangCell-CE head); ``"pooled"`` — the state the model
            pools into its cell embedding (its ``cell_pooling``: ``<cls>`` for the released
            model, the mean over genes for the ``tiny`` preset); ``"embedding"`` — the 256-d
            L2-normalised cell embedding (``cell_proj`` of the pooled state, as ``encode_cells``).
        freeze_encoder: linear probing: the encoder (and projection) is frozen, kept in eval
            mode (no dropout) and run without gradients; only the head trains.
        head_dropout: dropout on the features before the head (training only).
        freeze: further submodules to freeze, e.g. ``[cell_bert.embeddings, cell_bert.encoder.layer.0]``.
        attn_implementation, gradient_checkpointing: see :func:`build_model`.
        schedule: the :class:`~lightning_langcell.tasks.base.AdamWSchedule` keys; by default the
            official LangCell-CE fine-tuning (AdamW 5e-5, weight decay 0.001, 500 warm-up steps,
            cosine decay to 0).
    """

    schedule_defaults: AdamWSchedule = {**CellClassificationTask.schedule_defaults, "learning_rate": 5e-5,
                                        "weight_decay": 0.001, "warmup_steps": 500, "min_lr_ratio": 0.0}

    def __init__(
        self,
        model: str | dict[str, Any] = "tiny",
        init_from: str | None = None,
        features: str = "cls",
        freeze_encoder: bool = False,
        head_dropout: float = 0.0,
        freeze: Sequence[str] = (),
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        **schedule: Unpack[AdamWSchedule],
    ):
        super().__init__(**schedule)  # saves the hyperparameters
        if features not in FEATURES:
            raise LangCellInputError(f"Unknown features {features!r}.", f"Use one of {list(FEATURES)}.")
        langcell = build_model(
            model, init_from=init_from, attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.cell_bert = langcell.cell_bert
        self._trained_config = langcell.config
        self.cell_proj = langcell.cell_proj if features == "embedding" else None
        self.pooling = "cls" if features == "cls" else langcell.config.cell_pooling
        self.feature_size = langcell.config.embed_dim if self.cell_proj else langcell.config.cell.hidden_size
        self.init_std = float(langcell.config.cell.initializer_range)
        self.freeze_encoder = freeze_encoder
        self.dropout = nn.Dropout(head_dropout)
        self.head: nn.Linear | None = None
        if freeze_encoder:
            freeze_modules(self, ["cell_bert"] + (["cell_proj"] if self.cell_proj is not None else []))
        freeze_modules(self, freeze)

    def trained_config(self):
        """Config of the LangCell model the encoder came from (its training lengths, pooling)."""
        return self._trained_config

    def configure_classes(self, classes: Sequence[str], class_texts: Sequence[str]) -> None:
        """A fresh head [C, features] (normal, std = the encoder's initializer range; zero bias)."""
        if self.head is not None and self.head.out_features == len(classes):
            return
        head = nn.Linear(self.feature_size, len(classes))
        nn.init.normal_(head.weight, std=self.init_std)
        nn.init.zeros_(head.bias)
        self.head = head.to(self.device)

    def train(self, mode: bool = True) -> "CellTypeClassifier":
        """As ``nn.Module.train``, but a frozen encoder always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze_encoder:
            self.cell_bert.eval()
            if self.cell_proj is not None:
                self.cell_proj.eval()
        return self

    def cell_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads: [B, hidden] ``<cls>`` / pooled states or [B, 256] normalised embeddings."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            hidden = self.cell_bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = pool_cell_states(hidden, attention_mask, self.pooling)
            if self.cell_proj is None:
                return pooled
            return F.normalize(self.cell_proj(pooled), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits [B, C]."""
        if self.head is None:
            raise LangCellInputError(
                "The classifier head is not built yet: the classes are unknown.",
                "Call set_classes(classes) first, or run it through a Trainer with a LangCellDataModule.",
            )
        features = self.cell_features(batch["input_ids"], batch["attention_mask"])
        return self.head(self.dropout(features))

    def losses(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cross_entropy": masked_cross_entropy(outputs, labels)}

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, C]."""
        return outputs.softmax(dim=-1)
