"""Cell–text matching (CTM) with hard negatives drawn from the world batch (BLIP/ALBEF-style).

Recipe for one training step (each rank, after the CTC loss gave ``stats``):

1. ``neg_texts = sample_hard_negatives(stats.logits_ab, text_ids, stats.ids_world, g)``
   — one negative text per local cell; ``neg_cells = sample_hard_negatives(stats.logits_ba,
   text_ids, stats.ids_world, g)`` — one negative cell per local text. A column whose text is
   identical to the row's has weight 0, so identical-text pairs are never negatives.
2. ``batch = build_matching_batch(cell_hidden, cell_mask, text_ids_tok, text_mask,
   neg_texts, neg_cells)`` gathers the world batch (cell hidden states with gradient) and
   stacks B positives (label 1), then the negative-cell and negative-text pairs (label 0).
3. ``logits = model.match_logits(batch.text_input_ids, batch.text_attention_mask,
   batch.cell_hidden, batch.cell_attention_mask)`` and
   ``loss, stats = cell_text_matching_loss(logits, batch.labels)``.

Rows without any valid negative (every text of the world batch identical to theirs) are
skipped and counted (``HardNegatives.num_skipped``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives.distributed import GatheredBatch, gather_world, world_mean


@dataclass(frozen=True)
class HardNegatives:
    """One sampled negative per local row: ``indices`` [B_local] world column (-1 = none),
    ``valid`` [B_local] bool (False where the row had no admissible negative)."""

    indices: torch.Tensor
    valid: torch.Tensor

    @property
    def num_skipped(self) -> int:
        """Rows left without a negative (all world columns share their text)."""
        return int((~self.valid).sum().item())


@dataclass(frozen=True)
class MatchingBatch:
    """Pairs for the fusion pass, N = B + valid negative cells + valid negative texts.

    text_input_ids / text_attention_mask: [N, Lt]; cell_hidden: [N, Lc, H] (grad flows to
    every rank's cell encoder); cell_attention_mask: [N, Lc]; labels: [N] long, 1 = matching.
    """

    text_input_ids: torch.Tensor
    text_attention_mask: torch.Tensor
    cell_hidden: torch.Tensor
    cell_attention_mask: torch.Tensor
    labels: torch.Tensor


def hard_negative_probabilities(
    logits: torch.Tensor, ids_local: torch.Tensor, ids_world: torch.Tensor
) -> torch.Tensor:
    """softmax(logits) over the world columns, 0 on every column with the row's own text id,
    renormalised. logits: [B_local, B_world] (similarity / temperature); ids_local: [B_local];
    ids_world: [B_world]. Returns [B_local, B_world] float32; all-zero rows have no negative.
    """
    if logits.dim() != 2 or ids_local.shape != logits.shape[:1] or ids_world.shape != logits.shape[1:]:
        raise LangCellInputError(
            f"hard negatives need logits [B_local, B_world] with ids [B_local] and [B_world]; got "
            f"{tuple(logits.shape)}, {tuple(ids_local.shape)}, {tuple(ids_world.shape)}.",
            "pass stats.logits_ab / stats.logits_ba, the batch's text_ids and stats.ids_world.",
        )
    with torch.no_grad():
        same_text = ids_local.to(logits.device)[:, None] == ids_world.to(logits.device)[None, :]
        probs = F.softmax(logits.detach().float().masked_fill(same_text, float("-inf")), dim=1)
        valid = ~same_text.all(dim=1, keepdim=True)
        return torch.where(valid, probs, torch.zeros_like(probs))


def sample_hard_negatives(
    logits: torch.Tensor,
    ids_local: torch.Tensor,
    ids_world: torch.Tensor,
    generator: torch.Generator | None = None,
) -> HardNegatives:
    """Draw one negative column per row ∝ :func:`hard_negative_probabilities`.

    cells→texts: ``logits`` = cell→text logits, ``ids_local`` = the local cells' text ids,
    ``ids_world`` = the world texts' ids; texts→cells: text→cell logits, same ids (a cell's
    id is its text's id). ``generator`` may live on any device (draws happen there).
    """
    probs = hard_negative_probabilities(logits, ids_local, ids_world)
    valid = probs.sum(dim=1) > 0
    indices = torch.full(valid.shape, -1, dtype=torch.long, device=logits.device)
    if bool(valid.any()):
        rows = probs[valid]
        if generator is not None:
            rows = rows.to(generator.device)
        draws = torch.multinomial(rows, 1, generator=generator).squeeze(1)
        indices[valid] = draws.to(logits.device)
    return HardNegatives(indices=indices, valid=valid)


def _world(tensor: torch.Tensor, with_grad: bool, gather: bool) -> GatheredBatch:
    return gather_world(tensor, with_grad=with_grad) if gather else GatheredBatch(tensor, (tensor.shape[0],), 0)


def build_matching_batch(
    cell_hidden: torch.Tensor,
    cell_attention_mask: torch.Tensor,
    text_input_ids: torch.Tensor,
    text_attention_mask: torch.Tensor,
    negative_texts: HardNegatives,
    negative_cells: HardNegatives,
    gather: bool = True,
) -> MatchingBatch:
    """Positives, (text i, negative cell) and (negative text, cell i) pairs, in that order.

    cell_hidden: [B, Lc, H] last hidden states of the local cells; cell_attention_mask:
    [B, Lc]; text_input_ids / text_attention_mask: [B, Lt] (row i = cell i's text);
    negative_texts / negative_cells: from :func:`sample_hard_negatives` with the same
    ``gather`` setting. Ranks may differ in Lc and Lt: the world batch is padded with 0
    (mask 0). Returns a :class:`MatchingBatch`.
    """
    batch = cell_hidden.shape[0]
    shapes_ok = (
        cell_hidden.dim() == 3
        and cell_attention_mask.shape == cell_hidden.shape[:2]
        and text_input_ids.shape == text_attention_mask.shape
        and text_input_ids.shape[0] == batch
        and negative_texts.indices.shape == negative_cells.indices.shape == (batch,)
    )
    if not shapes_ok:
        raise LangCellInputError(
            "build_matching_batch needs cell_hidden [B,Lc,H], cell_attention_mask [B,Lc], text ids/mask "
            f"[B,Lt] and negatives [B]; got {tuple(cell_hidden.shape)}, {tuple(cell_attention_mask.shape)}, "
            f"{tuple(text_input_ids.shape)}, {tuple(text_attention_mask.shape)}, "
            f"{tuple(negative_texts.indices.shape)}, {tuple(negative_cells.indices.shape)}.",
            "pass the local batch's tensors and the negatives sampled for it.",
        )
    cells = _world(cell_hidden, True, gather)
    cell_mask = _world(cell_attention_mask, False, gather).world
    texts = _world(text_input_ids, False, gather).world
    text_mask = _world(text_attention_mask, False, gather).world
    n_world = cells.world.shape[0]
    for name, negatives in (("negative_texts", negative_texts), ("negative_cells", negative_cells)):
        chosen = negatives.indices[negatives.valid]
        if chosen.numel() and int(chosen.max()) >= n_world:
            raise LangCellInputError(
                f"{name} points past the world batch ({int(chosen.max())} >= {n_world}).",
                "sample negatives and build the batch with the same gather setting.",
            )
    device = cell_hidden.device
    own = torch.arange(cells.offset, cells.offset + batch, device=device)
    with_cell = negative_cells.valid.to(device)
    with_text = negative_texts.valid.to(device)
    text_index = torch.cat([own, own[with_cell], negative_texts.indices.to(device)[with_text]])
    cell_index = torch.cat([own, negative_cells.indices.to(device)[with_cell], own[with_text]])
    labels = torch.zeros(text_index.shape[0], dtype=torch.long, device=device)
    labels[:batch] = 1
    return MatchingBatch(
        text_input_ids=texts[text_index],
        text_attention_mask=text_mask[text_index],
        cell_hidden=cells.world[cell_index],
        cell_attention_mask=cell_mask[cell_index],
        labels=labels,
    )


def cell_text_matching_loss(
    match_logits: torch.Tensor, labels: torch.Tensor, gather: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CTM: cross-entropy of [N, 2] match logits against labels (1 = pair matches, 0 = not).

    gather=True returns this rank's share of the world mean (see
    :func:`~lightning_langcell.objectives.distributed.world_mean`; one all-reduce of the row
    count), so DDP averaging gives the gradient of the mean over all ranks' pairs.
    Returns (loss 0-d, {"accuracy", "positive_accuracy", "negative_accuracy"}) (detached;
    a class absent from the batch, e.g. no negatives at all, gives NaN for its accuracy).
    """
    if match_logits.dim() != 2 or match_logits.shape[1] != 2 or labels.shape != match_logits.shape[:1]:
        raise LangCellInputError(
            f"match_logits must be [N, 2] with labels [N]; got {tuple(match_logits.shape)} and {tuple(labels.shape)}.",
            "pass model.match_logits(...) for MatchingBatch pairs and MatchingBatch.labels.",
        )
    per_pair = F.cross_entropy(match_logits.float(), labels, reduction="none")
    loss = world_mean(per_pair) if gather else per_pair.mean()
    with torch.no_grad():
        hits = (match_logits.argmax(dim=1) == labels).float()
        positive = labels == 1
        stats = {
            "accuracy": hits.mean(),
            "positive_accuracy": hits[positive].mean(),
            "negative_accuracy": hits[~positive].mean(),
        }
    return loss, stats
