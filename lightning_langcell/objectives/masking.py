"""Masked gene modelling (MGM) loss; the masking itself is done by the collator
(:mod:`lightning_langcell.data.masking`, re-exported here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_langcell.data.masking import (  # noqa: F401  (re-exported: the MGM API in one place)
    IGNORE_INDEX,
    mask_genes,
    masking_generator,
    masking_seed,
)
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives.distributed import world_mean


def masked_gene_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, L] bool, True where a gene is to be predicted (``labels != IGNORE_INDEX``)."""
    return labels != IGNORE_INDEX


def masked_gene_modelling_loss(
    logits: torch.Tensor, labels: torch.Tensor, gather: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MGM cross-entropy at the masked positions.

    logits: [M, V] scores at ``masked_gene_positions(labels)`` in row-major order (what
    ``last_hidden_state[positions]`` gives); labels: [B, L] from :func:`mask_genes`.
    Mean over the M positions; with ``gather`` (default) this rank's share of the mean over
    the masked positions of ALL ranks (:func:`~lightning_langcell.objectives.distributed.world_mean`,
    one all-reduce of the count), so under DDP the loss averaged over ranks and the averaged
    gradients are those of one process on the world batch, whatever each rank's M. The plain
    local mean when not distributed. 0 (kept in the graph) when nothing was masked.
    Returns (loss 0-d, {"accuracy"}) (local accuracy; NaN when M = 0).
    """
    targets = labels[masked_gene_positions(labels)]
    if logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
        raise LangCellInputError(
            f"logits {tuple(logits.shape)} must be [M, vocab] with M = {targets.shape[0]} masked positions.",
            "compute the MGM head at masked_gene_positions(labels) only.",
        )
    per_position = F.cross_entropy(logits.float(), targets.long(), reduction="none")
    if gather:
        loss = world_mean(per_position)  # every rank takes part in the all-reduce, even with M = 0
    else:
        loss = per_position.mean() if targets.numel() else logits.sum() * 0.0
    if targets.numel() == 0:
        return loss, {"accuracy": torch.tensor(float("nan"), device=logits.device)}
    accuracy = (logits.detach().argmax(dim=1) == targets).float().mean()
    return loss, {"accuracy": accuracy}
