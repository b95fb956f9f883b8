"""LangCell pre-training: masked gene modelling, cell–cell and cell–text contrastive, matching."""

from __future__ import annotations

from typing import Any, Sequence, Unpack

import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives import PretrainingStep, registered_objectives, resolve_loss_weights
from lightning_langcell.tasks.base import AdamWSchedule, LangCellTask, build_model, freeze_modules


class LangCellPretraining(LangCellTask):
    """Pre-trains a :class:`LangCellModel` on tokenized cells and their texts.

    Each step encodes every cell twice: view A with the MGM-masked genes (MGM loss and the
    first C–C view), view B unmasked (second C–C view, and the cell side of CTC and CTM).
    Stage 1 of the paper is ``loss_weights={mgm: 1, cell_cell: 1, cell_text: 0, matching: 0}``,
    stage 2 all four. A weight of 0 switches a loss (and its forward work) off. The losses are
    the registered objectives (:mod:`lightning_langcell.objectives.registry`); each one with
    weight > 0 runs, in registration order, and one whose batch fields the data module does not
    provide is an error at setup (and at the batch), never a skipped term.

    Args:
        model: preset name (``tiny``, ``langcell``) or a ``LangCellConfig`` dict.
        text_tokenizer: local HF tokenizer directory (``None``: the bundled vocabulary); must be
            the data module's text tokenizer.
        text_init: local HF BERT directory to start the text encoder from.
        init_from: checkpoint to start from (stage 2 from stage 1, fine-tuning a release).
        loss_weights: weight of each registered objective (``mgm``, ``cell_cell``, ``cell_text``,
            ``matching`` and any registered later); unnamed ones keep their default weight.
        cell_cell_temperature: fixed temperature of the cell–cell InfoNCE.
        freeze: submodules whose weights stay fixed, e.g. ``[text_bert]``.
        attn_implementation: cell-encoder attention (``sdpa`` or ``eager``).
        gradient_checkpointing: recompute activations in backward (memory for time).
        deterministic_steps: reseed torch's global RNG (dropout) before every training step from
            (``seed_everything`` seed, global step, rank), so a run resumed from a checkpoint
            draws the same dropout masks as an uninterrupted one (Lightning does not restore
            the global RNG).
        schedule: the :class:`~lightning_langcell.tasks.base.AdamWSchedule` keys (defaults: the
            base task's: AdamW 1e-4, betas (0.9, 0.98), weight decay 0.01, 100 warm-up steps, cosine decay
            to 0.1 × the peak).
    """

    accepts_packed_batches = True  # the model reads packed cells through cu_seqlens

    def __init__(
        self,
        model: str | dict[str, Any] = "tiny",
        text_tokenizer: str | None = None,
        text_init: str | None = None,
        init_from: str | None = None,
        loss_weights: dict[str, float] | None = None,
        cell_cell_temperature: float = 0.1,
        freeze: Sequence[str] = (),
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        deterministic_steps: bool = True,
        **schedule: Unpack[AdamWSchedule],
    ):
        super().__init__(**schedule)  # saves the hyperparameters
        self.loss_weights = resolve_loss_weights(loss_weights)
        self.objectives = [
            objective for name, objective in registered_objectives().items() if self.loss_weights[name] > 0
        ]
        if not self.objectives:
            raise LangCellInputError("Every pre-training loss weight is 0: nothing would be trained.",
                                     f"Give at least one of {list(self.loss_weights)} a weight > 0.")
        for objective in self.objectives:
            unknown = set(objective.outputs) - set(PretrainingStep.OUTPUTS)
            if unknown:
                raise LangCellInputError(f"Objective {objective.name!r} asks for unknown model outputs {sorted(unknown)}.",
                                         f"Use outputs among {list(PretrainingStep.OUTPUTS)}.")
        self.cell_cell_temperature = cell_cell_temperature
        self.deterministic_steps = deterministic_steps
        self.model = build_model(model, text_tokenizer, text_init, init_from, attn_implementation, gradient_checkpointing)
        freeze_modules(self.model, freeze)

    def setup(self, stage: str) -> None:
        """Before the first step: every active objective's batch fields must be ones the data module's
        batches carry (e.g. masked gene modelling needs ``data.mgm_probability`` > 0)."""
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        fields = getattr(datamodule, "batch_fields", None)
        if stage in ("fit", "validate") and callable(fields):
            provided = fields()
            for objective in self.objectives:
                objective.check_fields(provided, "the data module (`data:` section)")

    def _generator(self, device: torch.device) -> torch.Generator:
        """Hard-negative sampling RNG, seeded per (global step, rank) so resumes reproduce it."""
        generator = torch.Generator(device=device)
        generator.manual_seed(1_000_003 * (self.global_step + 1) + self.global_rank)
        return generator

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total loss and a dict of every loss and statistic for logging."""
        for objective in self.objectives:
            objective.check_fields(batch, "the batch")
        step = PretrainingStep(
            self.model, batch, self._generator(batch["input_ids"].device),
            {"cell_cell_temperature": self.cell_cell_temperature},
        )
        losses: dict[str, torch.Tensor] = {}
        for objective in self.objectives:
            losses[objective.name], stats = objective.compute(step)
            step.logs.update(stats)
        logs = step.logs
        total = sum(self.loss_weights[name] * value for name, value in losses.items())
        logs.update({f"loss_{name}": value.detach() for name, value in losses.items()})
        return total, logs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logs = self.compute_losses(batch)
        size = len(batch["index"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logs = self.compute_losses(batch)
        size = len(batch["index"])
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=size, sync_dist=True)
