"""Embedding scores: silhouette equals scikit-learn's cosine silhouette, silhouette_label /
silhouette_batch follow scib's definitions (recomputed here from sklearn's silhouette_samples),
kNN purity / batch mixing equal hand-counted values, undefined cases give NaN."""

import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.embedding_metrics import (
    embedding_scores,
    knn_batch_mixing,
    knn_purity,
    nearest_neighbours,
    silhouette,
    silhouette_batch,
    silhouette_label,
)


def _points(n=120, dims=8, n_labels=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, size=n)
    centres = rng.normal(size=(n_labels, dims))
    return centres[labels] + rng.normal(scale=0.8, size=(n, dims)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silhouette_equals_sklearn_cosine(seed):
    from sklearn.metrics import silhouette_score

    x, labels = _points(seed=seed)
    labels[:1] = 7  # a singleton cluster scores 0 in both
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-6)
    names = np.array(["T cell", "B cell", "NK", "DC", "x", "y", "z", "mono"], dtype=object)[labels]
    assert silhouette(x, names) == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-6)


def test_silhouette_subsample_and_missing_labels():
    from sklearn.metrics import silhouette_score

    x, labels = _points(n=300, seed=3)
    named = np.array(["a", "b", "c", "d"], dtype=object)[labels]
    named[::10] = None  # missing labels are left out
    kept = np.array([v is not None for v in named])
    expected = silhouette_score(x[kept], labels[kept], metric="cosine")
    assert silhouette(x, named) == pytest.approx(expected, abs=1e-6)
    chosen = np.sort(np.random.default_rng(5).choice(kept.sum(), size=100, replace=False))
    expected_sub = silhouette_score(x[kept][chosen], labels[kept][chosen], metric="cosine")
    assert silhouette(x, named, max_cells=100, seed=5) == pytest.approx(expected_sub, abs=1e-6)


def test_silhouette_undefined_is_nan():
    x, _ = _points(n=10)
    assert np.isnan(silhouette(x, ["a"] * 10))  # one cluster
    assert np.isnan(silhouette(x, [str(i) for i in range(10)]))  # every cell its own cluster
    assert np.isnan(silhouette(x[:0], []))


def _scib_batch_asw(x, batches, labels):
    """scib's silhouette_batch, written out with sklearn: per label, 1 - |silhouette by batch| per
    cell, averaged per label, then over labels (labels with one batch, or one batch per cell, skipped)."""
    from sklearn.metrics import silhouette_samples

    per_label = []
    for label in np.unique(labels):
        members = labels == label
        n_batches = len(np.unique(batches[members]))
        if n_batches in (1, members.sum()):
            continue
        per_label.append(np.mean(1 - np.abs(silhouette_samples(x[members], batches[members], metric="cosine"))))
    return np.mean(per_label)


def test_scib_definitions_on_a_constructed_embedding():
    from sklearn.metrics import silhouette_score

    # two cell types on orthogonal axes; type A's two batches are split apart, type B's are mixed
    rng = np.random.default_rng(0)
    a_batch1 = np.array([1.0, 0.0, 0.3]) + rng.normal(scale=0.02, size=(20, 3))
    a_batch2 = np.array([1.0, 0.0, -0.3]) + rng.normal(scale=0.02, size=(20, 3))
    b_both = np.array([0.0, 1.0, 0.0]) + rng.normal(scale=0.1, size=(40, 3))
    x = np.concatenate([a_batch1, a_batch2, b_both])
    labels = np.repeat(["A", "B"], 40)
    batches = np.concatenate([np.repeat(["b1", "b2"], 20), np.tile(["b1", "b2"], 20)])
    batches[-1] = "b3"  # a third batch with one cell
    label_asw = silhouette_score(x, labels, metric="cosine")
    assert silhouette_label(x, labels) == pytest.approx((label_asw + 1) / 2, abs=1e-9)
    assert silhouette_label(x, labels) > 0.8  # well-separated types
    expected = _scib_batch_asw(x, batches, labels)
    assert silhouette_batch(x, batches, labels) == pytest.approx(expected, abs=1e-9)
    # type A's batches are apart (1 - |s| small), type B's mixed (near 1): the mean sits between
    a_only = silhouette_batch(x[:40], batches[:40], labels[:40])
    b_only = silhouette_batch(x[40:], batches[40:], labels[40:])
    assert a_only < 0.5 < 0.6 < b_only
    assert silhouette_batch(x, batches, labels) == pytest.approx((a_only + b_only) / 2, abs=1e-9)
    # no labels: one group of all cells
    from sklearn.metrics import silhouette_samples

    assert silhouette_batch(x, batches) == pytest.approx(
        np.mean(1 - np.abs(silhouette_samples(x, batches, metric="cosine"))), abs=1e-9)
    # a label seen in one batch only is skipped; none left: NaN
    assert np.isnan(silhouette_batch(x[:20], batches[:20], labels[:20]))


def test_knn_purity_and_mixing_on_a_hand_built_example():
    # two tight groups on orthogonal axes: cells 0-2 near e1, cells 3-5 near e2
    x = np.array([[1, 0.01, 0], [1, 0.02, 0], [1, 0, 0.01], [0.01, 1, 0], [0, 1, 0.02], [0.02, 1, 0.01]])
    neighbours = nearest_neighbours(x, k=2)
    assert {frozenset(row) for row in neighbours[:3]} <= {frozenset(s) for s in ([1, 2], [0, 2], [0, 1])}
    labels = ["A", "A", "B", "B", "B", "B"]  # cell 2 sits in the e1 group but is labelled B
    # k=2: cell0 {1,2} -> 1/2, cell1 {0,2} -> 1/2, cell2 {0,1} -> 0, cells 3-5 -> 1 each
    assert knn_purity(x, labels, k=2) == pytest.approx((0.5 + 0.5 + 0 + 3) / 6)
    batches = ["b1", "b2", "b1", "b2", "b1", "b2"]
    # cell0 {1,2}: 1/2; cell1 {0,2}: 1; cell2 {0,1}: 1/2; cell3 {4,5}: 1/2; cell4 {3,5}: 1; cell5 {3,4}: 1/2
    assert knn_batch_mixing(x, batches, k=2) == pytest.approx(4 / 6)
    # k is capped at N - 1: every other cell is a neighbour
    assert knn_purity(x, labels, k=50) == pytest.approx((1 / 5 + 1 / 5 + 3 / 5 + 3 * 3 / 5) / 6)


def test_embedding_scores_collects_what_is_given():
    x, labels = _points(n=60)
    batches = np.arange(60) % 2
    scores = embedding_scores(x, labels=labels, batches=batches, k=5)
    assert scores == {
        "silhouette_label": pytest.approx((silhouette(x, labels) + 1) / 2),
        "knn_purity": pytest.approx(knn_purity(x, labels, k=5)),
        "silhouette_batch": pytest.approx(_scib_batch_asw(x, batches, labels)),
        "knn_batch_mixing": pytest.approx(knn_batch_mixing(x, batches, k=5)),
    }
    assert embedding_scores(x) == {}
    assert scores["knn_purity"] > 0.8  # well-separated centres


def test_bad_inputs():
    x, labels = _points(n=10)
    with pytest.raises(LangCellInputError, match="9 labels for 10 cells"):
        knn_purity(x, labels[:9])
    with pytest.raises(LangCellInputError, match="2-d"):
        silhouette(x[0], labels[:1])
    with pytest.raises(LangCellInputError, match="at least 2 cells"):
        knn_purity(x[:1], labels[:1])
