"""MGM masking: gene tokens only, 15% rate, 80/10/10, reproducible per (seed, epoch, index)."""

import math

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives import (
    IGNORE_INDEX,
    mask_genes,
    masked_gene_modelling_loss,
    masked_gene_positions,
    masking_seed,
)

CLS, PAD, MASK = 25426, 0, 1


def _cells(lengths, width, seed=0):
    """`<cls>` + random genes (2..25425), right-padded with `<pad>` to `width`."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = CLS
        ids[row, 1:n] = torch.randint(2, 25426, (n - 1,), generator=generator)
    return ids, (ids != PAD).long()


def test_never_masks_cls_or_pad_even_at_probability_one():
    ids, mask = _cells([5, 9, 3, 12], 12)
    masked, labels = mask_genes(ids, mask, probability=1.0, indices=[0, 1, 2, 3])
    special = (ids == CLS) | (ids == PAD)
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(masked[special], ids[special])
    assert torch.equal(labels[~special], ids[~special])  # every gene selected at p = 1


def test_rate_and_80_10_10_split_on_a_big_batch():
    ids, mask = _cells([400] * 80, 400, seed=1)
    genes = mask.bool() & (ids != CLS)
    masked, labels = mask_genes(ids, mask, indices=range(80), seed=3)
    selected = labels != IGNORE_INDEX
    rate = selected.sum().item() / genes.sum().item()
    assert rate == pytest.approx(0.15, abs=0.006)  # 31,920 genes: binomial std 0.002

    masked, labels = mask_genes(ids, mask, probability=1.0, indices=range(80), seed=3)
    n = genes.sum().item()
    to_mask = (masked == MASK) & genes
    changed = (masked != ids) & genes & ~to_mask
    kept = (masked == ids) & genes
    assert to_mask.sum().item() / n == pytest.approx(0.8, abs=0.01)  # std 0.0022
    assert changed.sum().item() / n == pytest.approx(0.1, abs=0.007)  # std 0.0017
    assert kept.sum().item() / n == pytest.approx(0.1, abs=0.007)
    replaced = masked[changed]
    assert replaced.min() >= 2 and replaced.max() <= 25425  # genes only, never special ids
    assert replaced.float().mean().item() == pytest.approx(12713.5, rel=0.02)  # uniform over 2..25425


def test_same_cell_same_epoch_gets_the_same_mask_in_any_batch_position_and_padding():
    ids_a, mask_a = _cells([7, 30, 18], 30, seed=2)
    # the same three cells in another order, padded to a longer batch, with a stranger in between
    ids_b = torch.zeros(4, 40, dtype=torch.long)
    for row, source in ((0, 2), (2, 0), (3, 1)):
        ids_b[row, :30] = ids_a[source]
    ids_b[1, :5] = torch.tensor([CLS, 100, 200, 300, 400])
    mask_b = (ids_b != PAD).long()
    masked_a, labels_a = mask_genes(ids_a, mask_a, probability=0.5, seed=11, epoch=4, indices=[70, 71, 72])
    masked_b, labels_b = mask_genes(ids_b, mask_b, probability=0.5, seed=11, epoch=4, indices=[72, 5, 70, 71])
    for row_b, row_a in ((0, 2), (2, 0), (3, 1)):
        assert torch.equal(masked_b[row_b, :30], masked_a[row_a])
        assert torch.equal(labels_b[row_b, :30], labels_a[row_a])
    assert (labels_a != IGNORE_INDEX).any()


def test_masks_change_across_epochs_and_seeds():
    ids, mask = _cells([200, 200], 200, seed=3)
    _, epoch0 = mask_genes(ids, mask, seed=0, epoch=0, indices=[1, 2])
    _, epoch1 = mask_genes(ids, mask, seed=0, epoch=1, indices=[1, 2])
    _, other_seed = mask_genes(ids, mask, seed=1, epoch=0, indices=[1, 2])
    assert not torch.equal(epoch0, epoch1) and not torch.equal(epoch0, other_seed)
    assert masking_seed(0, 0, 1) != masking_seed(0, 1, 0) != masking_seed(1, 0, 0)


def test_generator_mode_is_reproducible():
    ids, mask = _cells([50, 20], 50, seed=4)
    first = mask_genes(ids, mask, generator=torch.Generator().manual_seed(9))
    second = mask_genes(ids, mask, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_masked_gene_modelling_loss_equals_hand_cross_entropy():
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[0, 2], labels[1, 1] = 3, 0
    logits = torch.tensor([[0.1, 0.2, 0.3, 1.0], [2.0, -1.0, 0.0, 0.5]])
    loss, stats = masked_gene_modelling_loss(logits, labels)
    hand = [-(row[t] - math.log(sum(math.exp(v) for v in row))) for row, t in zip(logits.tolist(), [3, 0])]
    assert loss.item() == pytest.approx(sum(hand) / 2, rel=1e-6)
    assert stats["accuracy"].item() == 1.0
    assert masked_gene_positions(labels).nonzero().tolist() == [[0, 2], [1, 1]]
    empty = torch.zeros(0, 4, requires_grad=True)
    zero, _ = masked_gene_modelling_loss(empty, torch.full((2, 4), IGNORE_INDEX))
    assert zero.item() == 0.0 and zero.requires_grad


def test_bad_inputs_raise_clear_errors():
    ids, mask = _cells([5], 5)
    with pytest.raises(LangCellInputError, match="probability"):
        mask_genes(ids, mask, probability=1.5)
    with pytest.raises(LangCellInputError, match="one dataset index per cell"):
        mask_genes(ids, mask, indices=[1, 2])
    with pytest.raises(LangCellInputError, match=r"\[B, L\]"):
        mask_genes(ids[0], mask[0])
