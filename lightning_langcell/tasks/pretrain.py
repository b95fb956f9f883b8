"""LangCell pre-training: masked gene modelling, cell–cell and cell–text contrastive, matching."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lightning_langcell.objectives import (
    build_matching_batch,
    cell_cell_contrastive_loss,
    cell_text_contrastive_loss,
    cell_text_matching_loss,
    masked_gene_modelling_loss,
    masked_gene_positions,
    sample_hard_negatives,
)
from lightning_langcell.tasks.base import LangCellTask, build_model, freeze_modules

LOSSES = ("mgm", "cell_cell", "cell_text", "matching")


class LangCellPretraining(LangCellTask):
    """Pre-trains a :class:`LangCellModel` on tokenized cells and their texts.

    Each step encodes every cell twice: view A with the MGM-masked genes (MGM loss and the
    first C–C view), view B unmasked (second C–C view, and the cell side of CTC and CTM).
    Stage 1 of the paper is ``loss_weights={mgm: 1, cell_cell: 1, cell_text: 0, matching: 0}``,
    stage 2 all four. A weight of 0 switches a loss (and its forward work) off.

    Args:
        model: preset name (``tiny``, ``langcell``) or a ``LangCellConfig`` dict.
        text_tokenizer: local HF tokenizer directory (``None``: the bundled vocabulary); must be
            the data module's text tokenizer.
        text_init: local HF BERT directory to start the text encoder from.
        init_from: checkpoint to start from (stage 2 from stage 1, fine-tuning a release).
        loss_weights: weight of each of ``mgm``, ``cell_cell``, ``cell_text``, ``matching``.
        cell_cell_temperature: fixed temperature of the cell–cell InfoNCE.
        freeze: submodules whose weights stay fixed, e.g. ``[text_bert]``.
        attn_implementation: cell-encoder attention (``sdpa`` or ``eager``).
        gradient_checkpointing: recompute activations in backward (memory for time).
        learning_rate, weight_decay, warmup_steps, min_lr_ratio, betas: AdamW and schedule.
        deterministic_steps: reseed torch's global RNG (dropout) before every training step from
            (``seed_everything`` seed, global step, rank), so a run resumed from a checkpoint
            draws the same dropout masks as an uninterrupted one (Lightning does not restore
            the global RNG).
    """

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
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        deterministic_steps: bool = True,
    ):
        super().__init__(learning_rate, weight_decay, warmup_steps, min_lr_ratio, betas)
        self.save_hyperparameters()
        weights = {name: 1.0 for name in LOSSES}
        unknown = set(loss_weights or {}) - set(LOSSES)
        if unknown:
            from lightning_langcell.errors import LangCellInputError

            raise LangCellInputError(f"Unknown loss names {sorted(unknown)}.", f"Use {list(LOSSES)}.")
        weights.update(loss_weights or {})
        self.loss_weights = weights
        self.cell_cell_temperature = cell_cell_temperature
        self.deterministic_steps = deterministic_steps
        self.model = build_model(model, text_tokenizer, text_init, init_from, attn_implementation, gradient_checkpointing)
        freeze_modules(self.model, freeze)

    def active(self, name: str) -> bool:
        return self.loss_weights.get(name, 0.0) > 0

    def _generator(self, device: torch.device) -> torch.Generator:
        """Hard-negative sampling RNG, seeded per (global step, rank) so resumes reproduce it."""
        generator = torch.Generator(device=device)
        generator.manual_seed(1_000_003 * (self.global_step + 1) + self.global_rank)
        return generator

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total loss and a dict of every loss and statistic for logging."""
        model, logs = self.model, {}
        losses: dict[str, torch.Tensor] = {}
        mask = batch["attention_mask"]
        view_a = None
        if self.active("mgm") or self.active("cell_cell"):
            masked = batch.get("mgm_input_ids", batch["input_ids"])
            hidden_a, view_a = model.encode_cells(masked, mask)
            if self.active("mgm") and "mgm_labels" in batch:
                labels = batch["mgm_labels"]
                logits = model.mgm_logits(hidden_a, masked_gene_positions(labels))
                losses["mgm"], stats = masked_gene_modelling_loss(logits, labels)
                logs["mgm_accuracy"] = stats["accuracy"]
        hidden_b, view_b = model.encode_cells(batch["input_ids"], mask)
        if self.active("cell_cell"):
            losses["cell_cell"], stats = cell_cell_contrastive_loss(view_a, view_b, self.cell_cell_temperature)
            logs.update({f"cell_cell_{k}": v for k, v in stats.scalars().items()})
        if self.active("cell_text") or self.active("matching"):
            _, text_emb = model.encode_texts(batch["text_input_ids"], batch["text_attention_mask"])
            temperature = model.temperature()
            ctc, stats = cell_text_contrastive_loss(view_b, text_emb, batch["text_ids"], temperature)
            logs["temperature"] = temperature.detach()
            logs.update(stats.scalars())
            if self.active("cell_text"):
                losses["cell_text"] = ctc
            if self.active("matching"):
                generator = self._generator(view_b.device)
                text_ids = batch["text_ids"]
                negative_texts = sample_hard_negatives(stats.logits_ab, text_ids, stats.ids_world, generator)
                negative_cells = sample_hard_negatives(stats.logits_ba, text_ids, stats.ids_world, generator)
                pairs = build_matching_batch(
                    hidden_b, mask, batch["text_input_ids"], batch["text_attention_mask"],
                    negative_texts, negative_cells,
                )
                logits = model.match_logits(
                    pairs.text_input_ids, pairs.text_attention_mask, pairs.cell_hidden, pairs.cell_attention_mask
                )
                losses["matching"], match_stats = cell_text_matching_loss(logits, pairs.labels)
                logs["matching_accuracy"] = match_stats["accuracy"]
                logs["matching_skipped_rows"] = torch.tensor(
                    float(negative_texts.num_skipped + negative_cells.num_skipped), device=view_b.device
                )
        total = sum(self.loss_weights[name] * value for name, value in losses.items())
        logs.update({f"loss_{name}": value.detach() for name, value in losses.items()})
        return total, logs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logs = self.compute_losses(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logs = self.compute_losses(batch)
        size = batch["input_ids"].shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=size, sync_dist=True)
