"""CTM: hard-negative sampling (never an identical text, ∝ softmax), batch building, loss."""

import math

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives import (
    HardNegatives,
    build_matching_batch,
    cell_text_contrastive_loss,
    cell_text_matching_loss,
    hard_negative_probabilities,
    sample_hard_negatives,
)


def test_matching_loss_equals_hand_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-0.2, 1.5], [1.0, 1.2]])
    labels = torch.tensor([1, 0, 0, 1])
    loss, stats = cell_text_matching_loss(logits, labels)
    hand = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        hand += -(row[label] - math.log(math.exp(row[0]) + math.exp(row[1])))
    assert loss.item() == pytest.approx(hand / 4, rel=1e-6)
    # predictions: 0, 0, 1, 1 → hits: no, yes, no, yes
    assert stats["accuracy"].item() == pytest.approx(0.5)
    assert stats["positive_accuracy"].item() == pytest.approx(0.5)
    assert stats["negative_accuracy"].item() == pytest.approx(0.5)


def test_hard_negative_probabilities_are_the_softmax_over_other_texts():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, 3.0]])
    probs = hard_negative_probabilities(logits, torch.tensor([7]), torch.tensor([7, 1, 2, 7, 3]))
    z = math.exp(1.0) + math.exp(2.0) + math.exp(3.0)
    expected = [0.0, math.exp(1.0) / z, math.exp(2.0) / z, 0.0, math.exp(3.0) / z]
    assert probs[0].tolist() == pytest.approx(expected, abs=1e-7)


def test_sampling_frequency_follows_the_softmax():
    row = torch.tensor([0.0, 1.0, 2.0, 0.5, 3.0, -1.0])
    ids_world = torch.tensor([7, 1, 2, 7, 3, 4])
    trials = 20000
    negatives = sample_hard_negatives(
        row.expand(trials, -1), torch.full((trials,), 7), ids_world, torch.Generator().manual_seed(0)
    )
    frequency = torch.bincount(negatives.indices, minlength=6).double() / trials
    expected = hard_negative_probabilities(row[None], torch.tensor([7]), ids_world)[0].double()
    assert frequency[0] == 0 and frequency[3] == 0
    # binomial std <= sqrt(0.25 / 20000) = 0.0035; 4 sigma
    assert torch.allclose(frequency, expected, atol=0.014)
    assert negatives.num_skipped == 0


def test_hard_negatives_never_pick_an_identical_text():
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        ids_world = torch.randint(0, 3, (12,), generator=generator)
        local = torch.arange(4, 9)  # this rank's rows inside the world batch
        logits = torch.randn(5, 12, generator=generator) * 5
        negatives = sample_hard_negatives(logits, ids_world[local], ids_world, generator)
        has_other = torch.tensor([bool((ids_world != ids_world[i]).any()) for i in local])
        assert torch.equal(negatives.valid, has_other)
        chosen = negatives.indices[negatives.valid]
        assert (ids_world[chosen] != ids_world[local][negatives.valid]).all()
        assert (negatives.indices[~negatives.valid] == -1).all()


def test_all_identical_texts_skip_every_row_and_keep_only_positives():
    cells, texts = torch.randn(4, 8), torch.randn(4, 8)
    ids = torch.full((4,), 42)
    _, stats = cell_text_contrastive_loss(cells, texts, ids, 0.07)
    negative_texts = sample_hard_negatives(stats.logits_ab, ids, stats.ids_world)
    negative_cells = sample_hard_negatives(stats.logits_ba, ids, stats.ids_world)
    assert negative_texts.num_skipped == 4 and negative_cells.num_skipped == 4
    assert (negative_texts.indices == -1).all()
    batch = build_matching_batch(
        torch.randn(4, 3, 2), torch.ones(4, 3), torch.ones(4, 5, dtype=torch.long), torch.ones(4, 5),
        negative_texts, negative_cells,
    )
    assert batch.labels.tolist() == [1, 1, 1, 1]
    loss, _ = cell_text_matching_loss(torch.zeros(4, 2), batch.labels)
    assert loss.item() == pytest.approx(math.log(2))


def test_build_matching_batch_pairs_rows_as_sampled():
    cell_hidden = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 1).clone().requires_grad_(True)
    cell_mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    text_ids = torch.tensor([[10, 11], [20, 0], [30, 31]])
    text_mask = (text_ids != 0).long()
    negative_texts = HardNegatives(torch.tensor([2, -1, 0]), torch.tensor([True, False, True]))
    negative_cells = HardNegatives(torch.tensor([1, 2, -1]), torch.tensor([True, True, False]))
    batch = build_matching_batch(cell_hidden, cell_mask, text_ids, text_mask, negative_texts, negative_cells)
    # positives (t0,c0) (t1,c1) (t2,c2); negative cells (t0,c1) (t1,c2); negative texts (t2,c0) (t0,c2)
    assert batch.labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert batch.text_input_ids[:, 0].tolist() == [10, 20, 30, 10, 20, 30, 10]
    assert batch.cell_hidden[:, 0, 0].tolist() == [0, 1, 2, 1, 2, 0, 2]
    assert batch.cell_attention_mask.tolist() == [[1, 1], [1, 0], [1, 1], [1, 0], [1, 1], [1, 1], [1, 1]]
    assert torch.equal(batch.text_attention_mask, (batch.text_input_ids != 0).long())
    batch.cell_hidden.sum().backward()
    # gradient counts how often each cell is used (x2 positions): cell 0 twice, cell 1 twice, cell 2 three times
    assert cell_hidden.grad[:, 0, 0].tolist() == [2.0, 2.0, 3.0]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(LangCellInputError, match=r"\[N, 2\]"):
        cell_text_matching_loss(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LangCellInputError, match="B_local"):
        sample_hard_negatives(torch.zeros(2, 3), torch.zeros(3), torch.zeros(3))
    far = HardNegatives(torch.tensor([5]), torch.tensor([True]))
    with pytest.raises(LangCellInputError, match="past the world batch"):
        build_matching_batch(torch.zeros(1, 2, 2), torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2), far, far)
