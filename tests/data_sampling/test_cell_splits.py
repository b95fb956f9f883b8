"""Stratified, grouped and k-shot splits: sizes per class, determinism, disjointness, errors."""

import numpy as np
import pytest

from lightning_langcell.data.splits import k_shot_indices, split_by_group, stratified_split
from lightning_langcell.errors import LangCellInputError

# Class sizes chosen to hit every rule: large, medium, 10 cells, exactly 3, and too small (2, 1).
CLASS_SIZES = {"B cell": 100, "T cell": 50, "NK cell": 10, "DC": 3, "pDC": 2, "platelet": 1}


def _labels(sizes=CLASS_SIZES, seed=0):
    labels = np.concatenate([[name] * n for name, n in sizes.items()]).astype(object)
    return labels[np.random.default_rng(seed).permutation(len(labels))]


def _per_class(labels, split):
    return {name: int((labels[split["train"]] == name).sum()) for name in CLASS_SIZES}, {
        name: (int((labels[split["val"]] == name).sum()), int((labels[split["test"]] == name).sum()))
        for name in CLASS_SIZES
    }


def _assert_partition(split, n_cells, covered=None):
    everything = np.concatenate([split["train"], split["val"], split["test"]])
    assert len(np.unique(everything)) == len(everything), "splits overlap"
    for part in split.values():
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    expected = np.arange(n_cells) if covered is None else covered
    np.testing.assert_array_equal(np.sort(everything), expected)


def test_stratified_split_sizes_per_class():
    labels = _labels()
    with pytest.warns(UserWarning, match=r"pDC \(2 cells\), platelet \(1 cells\)"):
        split = stratified_split(labels, (0.8, 0.1, 0.1), seed=7)
    _assert_partition(split, len(labels))
    train, val_test = _per_class(labels, split)
    # rounded cumulative fractions; the 3-cell class gets one cell per split; 2 cells → train+test.
    assert train == {"B cell": 80, "T cell": 40, "NK cell": 8, "DC": 1, "pDC": 1, "platelet": 1}
    assert val_test == {"B cell": (10, 10), "T cell": (5, 5), "NK cell": (1, 1), "DC": (1, 1), "pDC": (0, 1),
                        "platelet": (0, 0)}


@pytest.mark.parametrize("policy, pdc_train, kept", [("train", 2, 166), ("drop", 0, 163)])
def test_small_class_policies(policy, pdc_train, kept):
    labels = _labels()
    with pytest.warns(UserWarning, match=f"small_classes='{policy}'"):
        split = stratified_split(labels, (0.8, 0.1, 0.1), seed=7, small_classes=policy)
    assert sum(len(v) for v in split.values()) == kept
    train, val_test = _per_class(labels, split)
    assert train["pDC"] == pdc_train and val_test["pDC"] == (0, 0)
    assert train["DC"] == 1 and val_test["DC"] == (1, 1)


def test_stratified_split_is_deterministic_and_seeded():
    labels = _labels()
    with pytest.warns(UserWarning):
        a, b, c = (stratified_split(labels, (0.7, 0.15, 0.15), seed=s) for s in (3, 3, 4))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["train"], c["train"])


def test_adding_a_class_leaves_other_classes_unchanged():
    base = np.array(["A"] * 30 + ["B"] * 20, dtype=object)
    extended = np.concatenate([base, ["C"] * 12])
    a = stratified_split(base, (0.6, 0.2, 0.2), seed=1)
    b = stratified_split(extended, (0.6, 0.2, 0.2), seed=1)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a[name], b[name][b[name] < 50])


def test_two_to_one_split_and_unlabeled():
    split = stratified_split(np.array(["x"] * 9 + ["y"] * 6), (2 / 3, 0, 1 / 3), seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (10, 0, 5)
    random = stratified_split(None, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=0, n_cells=1000)
    _assert_partition(random, 1000)
    assert (len(random["train"]), len(random["val"]), len(random["test"])) == (700, 200, 100)
    assert not np.array_equal(random["train"], np.arange(700))


def test_missing_labels_form_their_own_stratum():
    labels = np.array(["A"] * 10 + [None] * 10 + [np.nan] * 10, dtype=object)
    split = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    _assert_partition(split, 30)
    assert np.sum(split["train"] >= 10) == 16 and np.sum(split["test"] >= 10) == 2


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1), {"train": 0.5, "holdout": 0.5}]
)
def test_bad_fractions_raise(fractions):
    with pytest.raises(LangCellInputError, match="Fix:"):
        stratified_split(["a", "b"], fractions)


def test_split_by_group_holds_out_whole_datasets():
    groups = np.array(["pbmc3k"] * 5 + ["garnett"] * 3 + ["baron"] * 2)
    split = split_by_group(groups, ["baron"])
    np.testing.assert_array_equal(split["test"], [8, 9])
    np.testing.assert_array_equal(split["train"], np.arange(8))
    assert split["val"].size == 0
    by_val_group = split_by_group(groups, ["baron"], val_groups=["garnett"])
    np.testing.assert_array_equal(by_val_group["val"], [5, 6, 7])
    labels = np.array(["T"] * 4 + ["B"] * 4 + ["beta"] * 2)
    by_fraction = split_by_group(groups, ["baron"], val_fraction=0.25, labels=labels, seed=0)
    _assert_partition(by_fraction, 10)
    assert len(by_fraction["val"]) == 2 and set(labels[by_fraction["val"]]) == {"T", "B"}
    with pytest.raises(LangCellInputError, match=r"\['zeisel'\] do not occur.*Fix: Use names among"):
        split_by_group(groups, ["zeisel"])
    with pytest.raises(LangCellInputError, match="nothing is left to train on"):
        split_by_group(groups, ["pbmc3k", "garnett", "baron"])


def test_k_shot_counts_nesting_and_exclusion():
    labels = _labels({"A": 10, "B": 6, "C": 4})
    train, rest = k_shot_indices(labels, 3, seed=5)
    assert {name: int((labels[train] == name).sum()) for name in "ABC"} == {"A": 3, "B": 3, "C": 3}
    _assert_partition({"train": train, "val": rest, "test": np.zeros(0, np.int64)}, 20)
    again, _ = k_shot_indices(labels, 3, seed=5)
    np.testing.assert_array_equal(train, again)
    one_shot, _ = k_shot_indices(labels, 1, seed=5)
    assert set(one_shot) < set(train)  # k-shot cells grow with k for a fixed seed
    other_seed, _ = k_shot_indices(labels, 3, seed=6)
    assert not np.array_equal(train, other_seed)
    held = np.flatnonzero(labels == "A")[:4]
    train_ex, rest_ex = k_shot_indices(labels, 3, seed=5, exclude=held)
    assert not set(held) & (set(train_ex) | set(rest_ex))
    assert len(train_ex) == 9 and len(rest_ex) == 20 - 4 - 9


def test_k_shot_too_few_cells_names_classes():
    labels = _labels({"A": 10, "B": 2, "C": 1})
    with pytest.raises(LangCellInputError) as info:
        k_shot_indices(labels, 3, seed=0)
    message = str(info.value)
    assert "B (2 cells), C (1 cells)" in message and "Lower k to at most 1" in message
    assert "min_cells=3" in message
    with pytest.warns(UserWarning, match=r"Dropped 2 class\(es\).*B \(2 cells\), C \(1 cells\)"):
        train, rest = k_shot_indices(labels, 3, seed=0, min_cells=4)
    assert set(labels[train]) == {"A"} and len(train) == 3 and len(rest) == 7
    with pytest.raises(LangCellInputError, match="positive integer"):
        k_shot_indices(labels, 0)
