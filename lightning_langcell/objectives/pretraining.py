"""LangCell's four pre-training objectives as registered :class:`Objective` objects.

Registration order is the order the task computes them (and the order their forwards run):
masked gene modelling, cell–cell contrastive, cell–text contrastive, cell–text matching.
"""

from __future__ import annotations

import torch

from lightning_langcell.objectives.contrastive import cell_cell_contrastive_loss
from lightning_langcell.objectives.masking import masked_gene_modelling_loss, masked_gene_positions
from lightning_langcell.objectives.matching import build_matching_batch, cell_text_matching_loss, sample_hard_negatives
from lightning_langcell.objectives.registry import Objective, register_objective
from lightning_langcell.objectives.step import PretrainingStep

CELL_FIELDS = ("input_ids", "attention_mask")
TEXT_FIELDS = ("text_input_ids", "text_attention_mask", "text_ids")
TEXT_FIX = "Give the data module per-cell texts (`data.texts: true`)."


class MaskedGeneModelling(Objective):
    """MGM: predict the masked genes of each cell (gene head only at the masked positions)."""

    name = "mgm"
    batch_fields = (*CELL_FIELDS, "mgm_input_ids", "mgm_labels")
    outputs = ("masked_cells",)
    fix = "Mask genes in the data module (`data.mgm_probability: 0.15`, the official rate)."

    def compute(self, step: PretrainingStep):
        hidden, _ = step.output("masked_cells")
        labels = step.batch["mgm_labels"]
        logits = step.model.mgm_logits(hidden, masked_gene_positions(labels))
        loss, stats = masked_gene_modelling_loss(logits, labels)
        return loss, {"mgm_accuracy": stats["accuracy"]}


class CellCellContrastive(Objective):
    """C–C: InfoNCE between the masked and the unmasked view of each cell, at the fixed temperature
    ``step.settings["cell_cell_temperature"]``."""

    name = "cell_cell"
    batch_fields = CELL_FIELDS
    outputs = ("masked_cells", "cells")

    def compute(self, step: PretrainingStep):
        _, view_a = step.output("masked_cells")
        _, view_b = step.output("cells")
        loss, stats = cell_cell_contrastive_loss(view_a, view_b, step.settings["cell_cell_temperature"])
        return loss, {f"cell_cell_{key}": value for key, value in stats.scalars().items()}


class CellTextContrastive(Objective):
    """CTC: InfoNCE between cells and their texts (identical texts are shared positives)."""

    name = "cell_text"
    batch_fields = (*CELL_FIELDS, *TEXT_FIELDS)
    outputs = ("cell_text",)
    fix = TEXT_FIX

    def compute(self, step: PretrainingStep):
        loss, _ = step.output("cell_text")
        return loss, {}


class CellTextMatching(Objective):
    """CTM: match / no-match of (text, cell) pairs with hard negatives drawn from the CTC scores."""

    name = "matching"
    batch_fields = (*CELL_FIELDS, *TEXT_FIELDS)
    outputs = ("cells", "cell_text")
    fix = TEXT_FIX

    def compute(self, step: PretrainingStep):
        model, batch = step.model, step.batch
        _, stats = step.output("cell_text")
        hidden, _ = step.output("cells")
        text_ids = batch["text_ids"]
        negative_texts = sample_hard_negatives(stats.logits_ab, text_ids, stats.ids_world, step.generator)
        negative_cells = sample_hard_negatives(stats.logits_ba, text_ids, stats.ids_world, step.generator)
        cell_hidden, cell_mask = step.padded_cells(hidden)
        pairs = build_matching_batch(
            cell_hidden, cell_mask, batch["text_input_ids"], batch["text_attention_mask"],
            negative_texts, negative_cells,
        )
        logits = model.match_logits(
            pairs.text_input_ids, pairs.text_attention_mask, pairs.cell_hidden, pairs.cell_attention_mask
        )
        loss, match_stats = cell_text_matching_loss(logits, pairs.labels)
        skipped = float(negative_texts.num_skipped + negative_cells.num_skipped)
        return loss, {
            "matching_accuracy": match_stats["accuracy"],
            "matching_skipped_rows": torch.tensor(skipped, device=hidden.device),
        }


for _objective in (MaskedGeneModelling(), CellCellContrastive(), CellTextContrastive(), CellTextMatching()):
    register_objective(_objective)
