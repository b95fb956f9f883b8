"""Masked gene modelling inputs: BERT 80/10/10 masking of gene tokens, done by the collator.

Reproducible masks: with ``seed``, ``epoch`` and the cells' dataset ``indices``, every row
draws its randomness from its own generator keyed by (seed, epoch, index) and only over its
real (attended) tokens, so a cell gets the same mask at the same epoch whatever batch, batch
position, padding length or rank it lands in, and a new mask at every epoch. The loss on these
labels lives in :mod:`lightning_langcell.objectives.masking`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization.vocabulary import CLS_ID, MASK_ID, PAD_ID

VOCAB_SIZE = CLS_ID + 1  # the bundled Geneformer-30M vocabulary with <cls>
IGNORE_INDEX = -100
"""Target of a position or cell that is not predicted (``torch.nn.functional.cross_entropy``'s
default ``ignore_index``): unmasked genes in MGM labels, unknown cell types in class labels."""


def masking_seed(seed: int, epoch: int, index: int) -> int:
    """64-bit seed for one cell at one epoch, mixed by numpy's ``SeedSequence``."""
    if min(seed, epoch, index) < 0:
        raise LangCellInputError(
            f"masking needs non-negative seed, epoch and index; got ({seed}, {epoch}, {index}).",
            "pass the dataset index of each cell and the current epoch (from 0).",
        )
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, np.uint64)[0])


def masking_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """CPU ``torch.Generator`` seeded from (seed, epoch, index)."""
    generator = torch.Generator()
    generator.manual_seed(masking_seed(seed, epoch, index))
    return generator


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, probability: float) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise LangCellInputError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must both be [B, L].",
            "pass a padded batch of token ids with its 0/1 attention mask.",
        )
    if input_ids.dtype not in (torch.int32, torch.int64):
        raise LangCellInputError(f"input_ids must be integer token ids, got {input_ids.dtype}.", "use a LongTensor.")
    if not 0.0 <= probability <= 1.0:
        raise LangCellInputError(f"probability must be in [0, 1], got {probability}.", "use 0.15 (Geneformer).")


def _uniform_draws(
    attention_mask: torch.Tensor,
    seed: int,
    epoch: int,
    indices: Sequence[int] | torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """[3, B, L] float64 uniforms on the CPU: selection, 80/10/10 kind, replacement gene."""
    batch, length = attention_mask.shape
    if indices is None:
        return torch.rand(3, batch, length, dtype=torch.float64, generator=generator)
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if len(indices) != batch:
        raise LangCellInputError(
            f"indices has {len(indices)} entries for {batch} rows.", "pass one dataset index per cell of the batch."
        )
    draws = torch.ones(3, batch, length, dtype=torch.float64)
    real = attention_mask.detach().cpu().bool()
    for row, index in enumerate(indices):
        positions = real[row].nonzero().squeeze(1)
        row_generator = masking_generator(seed, epoch, index)
        draws[:, row, positions] = torch.rand(3, positions.numel(), dtype=torch.float64, generator=row_generator)
    return draws


def mask_genes(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    probability: float = 0.15,
    vocab_size: int = VOCAB_SIZE,
    special_ids: Sequence[int] = (PAD_ID, MASK_ID, CLS_ID),
    mask_id: int = MASK_ID,
    *,
    seed: int = 0,
    epoch: int = 0,
    indices: Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of gene tokens: select each attended non-special token with ``probability``;
    of those, 80% → ``mask_id``, 10% → a uniformly random gene (never a special id), 10% kept.

    input_ids, attention_mask: [B, L]. With ``indices`` ([B] dataset indices) the masks are
    reproducible per (seed, epoch, index); without, one batch-wide draw from ``generator``
    (a CPU generator, or torch's global RNG when None). Returns (masked_input_ids [B, L],
    labels [B, L]): labels hold the original id where selected, ``IGNORE_INDEX`` elsewhere.
    """
    _check_inputs(input_ids, attention_mask, probability)
    draws = _uniform_draws(attention_mask, seed, epoch, indices, generator).to(input_ids.device)
    special = torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device)
    genes = torch.arange(vocab_size, dtype=input_ids.dtype, device=input_ids.device)
    genes = genes[~torch.isin(genes, special)]
    maskable = attention_mask.bool() & ~torch.isin(input_ids, special)
    selected = maskable & (draws[0] < probability)
    to_mask = selected & (draws[1] < 0.8)
    to_random = selected & (draws[1] >= 0.8) & (draws[1] < 0.9)
    random_genes = genes[(draws[2] * genes.numel()).long().clamp_(max=genes.numel() - 1)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_genes, masked)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked, labels
