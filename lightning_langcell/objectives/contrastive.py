"""Symmetric InfoNCE losses: cell–text (CTC) and cell–cell (C–C), OpenCLIP local-loss style.

Each rank scores its LOCAL rows against ALL gathered columns, in both directions:
cell→text = local cells × world texts, text→cell = local texts × world cells. The world
columns are gathered with gradient, and each direction's per-row losses are reduced with
:func:`~lightning_langcell.objectives.distributed.world_mean` (``W · sum_local / N_world``).

Scaling under DDP: the rank's embeddings receive the gradient of the SUM of all ranks' losses
(local rows + the all-reduced column gradients), i.e. W × the gradient of the world-batch
loss; DDP's average over W ranks divides it back, so parameters get exactly the gradient
of the single-process loss on the concatenated world batch. The loss value on one rank is
its share; its mean over ranks (Lightning ``sync_dist=True``) is the world-batch loss.

Positives: in CTC, columns whose text is identical to the row's (same ``text_ids``) are all
positives; the target spreads uniformly over them (soft-target cross-entropy). Pass ids that
are equal across ranks for equal texts, e.g. :func:`text_identity_ids`. In C–C the only
positive of a view is the other view of the same cell.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives.distributed import GatheredBatch, gather_world, world_mean


def text_identity_ids(texts: Sequence[str]) -> torch.Tensor:
    """One int64 id per text, equal for identical texts on every rank and process.

    Uses blake2b of the UTF-8 text (Python's ``hash`` is salted per process). [T] long.
    """
    digests = (hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest() for text in texts)
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.long)


@dataclass(frozen=True)
class ContrastiveStats:
    """Detached by-products of a symmetric InfoNCE.

    ``logits_ab``: [B_local, B_world] similarity / temperature of local rows of the first
    input (cells, or view a) against the world columns of the second (texts, or view b);
    ``logits_ba`` the reverse. ``ids_world``: [B_world] positive-group id of every world
    column (text ids for CTC, world row index for C–C). Accuracies are top-1 over local
    rows (a hit = the argmax column is a positive), 0-d float tensors.
    """

    accuracy_ab: torch.Tensor
    accuracy_ba: torch.Tensor
    logits_ab: torch.Tensor
    logits_ba: torch.Tensor
    ids_world: torch.Tensor
    directions: tuple[str, str]

    def scalars(self) -> dict[str, torch.Tensor]:
        """{"<a>_to_<b>_accuracy", "<b>_to_<a>_accuracy"} for logging."""
        a, b = self.directions
        return {f"{a}_to_{b}_accuracy": self.accuracy_ab, f"{b}_to_{a}_accuracy": self.accuracy_ba}


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise LangCellInputError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must both be [batch, dim] "
            "with the same shape.",
            "pass one embedding row per cell, in the same order for both inputs.",
        )


def _check_temperature(temperature: float | torch.Tensor) -> None:
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise LangCellInputError(
            f"temperature must be > 0, got {temperature}.", "use e.g. 0.07 (BLIP) or 0.05 (LangCell inference)."
        )


def _soft_target_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Per-row -Σ_j q_j log softmax(logits)_j with q uniform over the row's positives. [B]."""
    targets = positives.float() / positives.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def _top1_accuracy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    hits = positives.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    return hits.float().mean().detach()


def _local_batch(tensor: torch.Tensor) -> GatheredBatch:
    return GatheredBatch(tensor, (tensor.shape[0],), 0)


def _symmetric_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    ids: torch.Tensor | None,
    temperature: float | torch.Tensor,
    gather: bool,
    directions: tuple[str, str],
) -> tuple[torch.Tensor, ContrastiveStats]:
    """Shared core: ``ids`` None means each row's only positive is its own partner row."""
    _check_pair(a, b, directions)
    _check_temperature(temperature)
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    a_world = gather_world(a, with_grad=True) if gather else _local_batch(a)
    b_world = gather_world(b, with_grad=True) if gather else _local_batch(b)
    if ids is None:
        ids_world = torch.arange(a_world.world.shape[0], device=a.device)
        ids_local = ids_world[a_world.local_slice]
    else:
        ids_local = ids.to(a.device)
        ids_world = gather_world(ids_local, with_grad=False).world if gather else ids_local
    positives = ids_local[:, None] == ids_world[None, :]  # [B_local, B_world], same both ways
    logits_ab = a @ b_world.world.T / temperature
    logits_ba = b @ a_world.world.T / temperature
    loss_ab = _soft_target_cross_entropy(logits_ab, positives)
    loss_ba = _soft_target_cross_entropy(logits_ba, positives)
    if gather:
        n_world = ids_world.shape[0]
        loss = 0.5 * (world_mean(loss_ab, n_world) + world_mean(loss_ba, n_world))
    else:
        loss = 0.5 * (loss_ab.mean() + loss_ba.mean())
    stats = ContrastiveStats(
        accuracy_ab=_top1_accuracy(logits_ab, positives),
        accuracy_ba=_top1_accuracy(logits_ba, positives),
        logits_ab=logits_ab.detach(),
        logits_ba=logits_ba.detach(),
        ids_world=ids_world.detach(),
        directions=directions,
    )
    return loss, stats


def cell_text_contrastive_loss(
    cell_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_ids: torch.Tensor,
    temperature: float | torch.Tensor,
    gather: bool = True,
) -> tuple[torch.Tensor, ContrastiveStats]:
    """CTC: symmetric cell–text InfoNCE with identical texts as shared positives.

    cell_emb, text_emb: [B, D] (row i = cell i and its text; L2-normalised here, a no-op on
    already normalised input); text_ids: [B] long, equal ids = identical text (all ranks);
    temperature: > 0, float or 0-d tensor (learnable; clamp it in the model), logits =
    cosine / temperature. gather: score local rows against the world batch (no-op when not
    distributed). Returns (loss 0-d, stats) — ``stats.logits_ab`` is cell→text,
    ``stats.logits_ba`` text→cell, ready for :func:`sample_hard_negatives`.
    """
    if text_ids.shape != cell_emb.shape[:1]:
        raise LangCellInputError(
            f"text_ids {tuple(text_ids.shape)} must have one id per cell ({cell_emb.shape[0]}).",
            "build them with text_identity_ids(texts) from the batch's texts.",
        )
    return _symmetric_infonce(cell_emb, text_emb, text_ids, temperature, gather, ("cell", "text"))


def cell_cell_contrastive_loss(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    temperature: float | torch.Tensor,
    gather: bool = True,
) -> tuple[torch.Tensor, ContrastiveStats]:
    """C–C: symmetric InfoNCE between two stochastic views of each cell.

    view_a, view_b: [B, D] embeddings of the same cells (e.g. two dropout/masking passes),
    L2-normalised here. Every other cell of the world batch is a negative. Returns
    (loss 0-d, stats) with directions ("view_a", "view_b").
    """
    return _symmetric_infonce(view_a, view_b, None, temperature, gather, ("view_a", "view_b"))
