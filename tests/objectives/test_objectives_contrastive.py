"""CTC and C–C InfoNCE against hand computations (single process)."""

import math

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.objectives import (
    cell_cell_contrastive_loss,
    cell_text_contrastive_loss,
    text_identity_ids,
)


def _unit(rows):
    return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows]


def _hand_direction(rows, cols, row_ids, col_ids, temperature):
    """Mean over rows of -Σ_j q_j log softmax_j, q uniform over same-id columns (plain Python)."""
    total = 0.0
    for i, row in enumerate(rows):
        logits = [sum(a * b for a, b in zip(row, col)) / temperature for col in cols]
        log_z = math.log(sum(math.exp(v) for v in logits))
        positives = [j for j in range(len(cols)) if col_ids[j] == row_ids[i]]
        total += -sum(logits[j] - log_z for j in positives) / len(positives)
    return total / len(rows)


def _hand_symmetric(a, b, ids, temperature):
    a, b = _unit(a.tolist()), _unit(b.tolist())
    ids = ids.tolist()
    return 0.5 * (_hand_direction(a, b, ids, ids, temperature) + _hand_direction(b, a, ids, ids, temperature))


def _embeddings(seed, rows=6, dim=5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=generator), torch.randn(rows, dim, generator=generator)


@pytest.mark.parametrize("ids", [[0, 1, 2, 3, 4, 5], [5, 5, 7, 9, 7, 5], [3, 3, 3, 3, 3, 3]])
def test_ctc_equals_hand_computation_with_identical_text_soft_targets(ids):
    cells, texts = _embeddings(0)
    ids = torch.tensor(ids)
    loss, _ = cell_text_contrastive_loss(cells, texts, ids, temperature=0.07)
    assert loss.item() == pytest.approx(_hand_symmetric(cells, texts, ids, 0.07), rel=1e-5, abs=1e-6)


def test_ctc_soft_targets_differ_from_diagonal_targets():
    cells, texts = _embeddings(1)
    unique, _ = cell_text_contrastive_loss(cells, texts, torch.arange(6), 0.1)
    shared, _ = cell_text_contrastive_loss(cells, texts, torch.tensor([0, 0, 1, 1, 2, 2]), 0.1)
    assert unique.item() == pytest.approx(_hand_symmetric(cells, texts, torch.arange(6), 0.1), rel=1e-5)
    assert abs(unique.item() - shared.item()) > 1e-3


def test_ctc_of_identical_embeddings_is_log_batch_size():
    same = torch.ones(4, 8)
    for ids in ([0, 1, 2, 3], [0, 0, 1, 1]):
        loss, _ = cell_text_contrastive_loss(same, same, torch.tensor(ids), 0.05)
        assert loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_cell_cell_equals_hand_computation():
    view_a, view_b = _embeddings(2, rows=5, dim=7)
    loss, stats = cell_cell_contrastive_loss(view_a, view_b, torch.tensor(0.2))
    assert loss.item() == pytest.approx(_hand_symmetric(view_a, view_b, torch.arange(5), 0.2), rel=1e-5)
    assert set(stats.scalars()) == {"view_a_to_view_b_accuracy", "view_b_to_view_a_accuracy"}


def test_inputs_are_l2_normalised_and_gather_is_identity_on_one_process():
    cells, texts = _embeddings(3)
    ids = torch.tensor([1, 2, 1, 3, 4, 2])
    scaled, _ = cell_text_contrastive_loss(cells * 7.0, texts * 0.3, ids, 0.07, gather=True)
    plain, _ = cell_text_contrastive_loss(cells, texts, ids, 0.07, gather=False)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-6)


def test_accuracy_counts_a_hit_on_any_identical_text():
    texts = torch.eye(4)
    ids = torch.tensor([10, 10, 20, 30])
    # cell 0 → text 1 (same text as its own: hit), cell 1 → text 0 (hit),
    # cell 2 → text 3 (other text: miss), cell 3 → text 3 (hit)
    cells = torch.stack([texts[1], texts[0], texts[3] + 0.5 * texts[2], texts[3]])
    _, stats = cell_text_contrastive_loss(cells, texts, ids, 0.07)
    assert stats.scalars()["cell_to_text_accuracy"].item() == pytest.approx(0.75)
    # text 0 → cell 1, text 1 → cell 0, text 2 → cell 2, text 3 → cell 3: all hits
    assert stats.scalars()["text_to_cell_accuracy"].item() == pytest.approx(1.0)
    assert stats.logits_ab.shape == (4, 4) and not stats.logits_ab.requires_grad
    assert torch.equal(stats.ids_world, ids)


def test_gradient_reaches_embeddings_and_learnable_temperature():
    cells, texts = _embeddings(4)
    cells.requires_grad_(True)
    temperature = torch.tensor(0.07, requires_grad=True)
    loss, _ = cell_text_contrastive_loss(cells, texts, torch.arange(6), temperature)
    loss.backward()
    assert cells.grad.abs().sum() > 0 and temperature.grad.abs() > 0


def test_text_identity_ids_are_stable_and_equal_for_equal_texts():
    ids = text_identity_ids(["cell type: B cell.", "cell type: T cell.", "cell type: B cell."])
    assert ids.dtype == torch.long and ids[0] == ids[2] and ids[0] != ids[1]
    # blake2b, not Python's salted hash: the value is fixed forever
    assert int(text_identity_ids(["abc"])[0]) == int.from_bytes(
        __import__("hashlib").blake2b(b"abc", digest_size=8).digest(), "little", signed=True
    )


def test_bad_shapes_and_temperature_raise_clear_errors():
    cells, texts = _embeddings(5)
    with pytest.raises(LangCellInputError, match="same shape"):
        cell_text_contrastive_loss(cells, texts[:3], torch.arange(6), 0.07)
    with pytest.raises(LangCellInputError, match="one id per cell"):
        cell_text_contrastive_loss(cells, texts, torch.arange(5), 0.07)
    with pytest.raises(LangCellInputError, match="temperature"):
        cell_cell_contrastive_loss(cells, texts, 0.0)
