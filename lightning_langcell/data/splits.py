"""Seeded cell splits: stratified train/val/test, held-out groups, and k-shot selection.

Pure index logic (numpy + pandas). Every function returns sorted ``int64`` arrays of cell
positions (rows of the corpus / AnnData), so results can index ``obs`` or a dataset directly.

Randomness is drawn per class from ``numpy.random.default_rng([seed, crc32(class name)])``: a
class's cells are chosen independently of the other classes present, so adding or dropping a
class never reshuffles the others, and the k-shot cells for ``k`` are a subset of those for
``k + 1`` (same seed).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from lightning_langcell.column_codes import narrow_int, used_codes
from lightning_langcell.errors import LangCellInputError, shorten

SPLIT_NAMES = ("train", "val", "test")
# Order in which a class too small for every split hands out its few cells.
_SMALL_CLASS_PRIORITY = ("train", "test", "val")
UNLABELED = "<unlabeled>"

SmallClassPolicy = Literal["spread", "train", "drop"]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LangCellInputError(f"seed must be a non-negative integer, got {seed!r}.", "Pass e.g. seed=0.")
    return int(seed)


def _class_codes(labels: Sequence | np.ndarray | pd.Series | pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """Label vector → (codes [N], the narrowest signed integer type, -1 for missing labels;
    sorted class names [C]). A ``pandas.Categorical`` of text categories is read through its
    codes (no per-cell Python work); unused categories are not classes."""
    if isinstance(labels, pd.Categorical) and len(labels) and all(isinstance(c, str) for c in labels.categories):
        return _categorical_codes(labels)
    series = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels)
    if series.ndim != 1 or len(series) == 0:
        raise LangCellInputError("labels must be a non-empty 1-d sequence (one label per cell).")
    missing = series.isna().to_numpy()
    names = series.astype(object).where(~missing, None)
    try:
        codes, classes = pd.factorize(names, sort=True, use_na_sentinel=True)
    except TypeError:  # mixed label types that cannot be ordered: order by their text
        codes, classes = pd.factorize(names.map(lambda x: None if x is None else str(x)), sort=True)
    return codes.astype(narrow_int(len(classes))), np.asarray(classes, dtype=object)


def _categorical_codes(labels: pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_class_codes` of a Categorical: its used categories, sorted, and codes remapped to them."""
    codes = np.asarray(labels.codes)
    names = np.asarray(labels.categories, dtype=object)
    kept = np.flatnonzero(used_codes(codes, len(names)))
    kept = kept[np.argsort(names[kept], kind="stable")]
    remap = np.full(len(names) + 1, -1, dtype=narrow_int(len(kept)))
    remap[kept] = np.arange(len(kept))
    return remap[codes], names[kept]


def _class_rng(seed: int, class_name: object) -> np.random.Generator:
    """A generator that depends only on (seed, class name)."""
    return np.random.default_rng([seed, zlib.crc32(str(class_name).encode("utf-8"))])


def _strata(codes: np.ndarray, classes: np.ndarray) -> list[tuple[object, np.ndarray]]:
    """(class name, sorted member positions) per class, plus one stratum for unlabeled cells."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(-1, len(classes) + 1, dtype=codes.dtype))
    strata = [(classes[c], order[bounds[c + 1] : bounds[c + 2]]) for c in range(len(classes))]
    if bounds[1] > 0:
        strata.append((UNLABELED, order[: bounds[1]]))
    return strata


def _check_fractions(fractions: Sequence[float] | Mapping[str, float]) -> np.ndarray:
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - set(SPLIT_NAMES)
        if unknown:
            raise LangCellInputError(
                f"Unknown split name(s) {sorted(unknown)} in fractions.", f"Use keys among {list(SPLIT_NAMES)}."
            )
        values = [float(fractions.get(name, 0.0)) for name in SPLIT_NAMES]
    else:
        values = [float(f) for f in fractions]
    frac = np.asarray(values, dtype=np.float64)
    if frac.shape != (3,) or not np.all(np.isfinite(frac)) or np.any(frac < 0) or abs(frac.sum() - 1.0) > 1e-6:
        raise LangCellInputError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions!r}.",
            "Pass e.g. fractions=(0.8, 0.1, 0.1), or (2/3, 0, 1/3) for a 2:1 train/test split.",
        )
    return frac / frac.sum()


def _allocate(n_cells: int, fractions: np.ndarray) -> np.ndarray:
    """Cells per split [3] for one class: rounded cumulative boundaries, then ≥ 1 per non-zero split.

    Assumes ``n_cells`` ≥ the number of non-zero splits (smaller classes are handled by policy).
    """
    bounds = np.floor(np.cumsum(fractions) * n_cells + 0.5).astype(np.int64)
    bounds[-1] = n_cells
    counts = np.diff(bounds, prepend=0)
    for split in _SMALL_CLASS_PRIORITY:
        s = SPLIT_NAMES.index(split)
        if fractions[s] > 0 and counts[s] == 0:
            donor = int(np.argmax(counts))  # holds ≥ 2 cells because n_cells ≥ non-zero splits
            counts[donor] -= 1
            counts[s] += 1
    return counts


def stratified_split(
    labels: Sequence | np.ndarray | pd.Series | None,
    fractions: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    n_cells: int | None = None,
    small_classes: SmallClassPolicy = "spread",
) -> dict[str, np.ndarray]:
    """Split cells into train/val/test, stratified by label, deterministic for a given seed.

    Args:
        labels: one label per cell [N] (strings or integers, or a ``pandas.Categorical``, read
            through its codes; missing values — None/NaN — form their own "unlabeled" stratum),
            or ``None`` for a plain seeded random split of
            ``n_cells`` cells.
        fractions: (train, val, test) summing to 1, or a mapping with those keys; a zero
            fraction gives an empty split.
        seed: non-negative integer.
        n_cells: number of cells, required when ``labels`` is None.
        small_classes: what to do with a class holding fewer cells than there are non-zero
            splits (e.g. < 3 cells for three splits). ``"spread"`` (default): one cell per split
            in the order train, test, val until its cells run out (1 cell → train; 2 → train +
            test); ``"train"``: all its cells to train; ``"drop"``: the class is left out of every
            split. A warning names these classes.

    Returns:
        ``{"train", "val", "test"}`` → sorted int64 cell positions, disjoint. Per class, split
        sizes are the rounded cumulative fractions of the class size, and every class with at
        least as many cells as non-zero splits has ≥ 1 cell in each non-zero split.
    """
    seed = _check_seed(seed)
    frac = _check_fractions(fractions)
    if small_classes not in ("spread", "train", "drop"):
        raise LangCellInputError(
            f"small_classes must be 'spread', 'train' or 'drop', got {small_classes!r}.", "Pick one of those."
        )
    if labels is None:
        if n_cells is None or int(n_cells) < 1:
            raise LangCellInputError(
                "stratified_split got labels=None and no n_cells.", "Pass n_cells=<number of cells> (≥ 1)."
            )
        strata = [(UNLABELED, np.arange(int(n_cells), dtype=np.int64))]
    else:
        strata = _strata(*_class_codes(labels))

    active = [SPLIT_NAMES.index(s) for s in _SMALL_CLASS_PRIORITY if frac[SPLIT_NAMES.index(s)] > 0]
    n_total = int(n_cells) if labels is None else len(labels)
    assigned = np.full(n_total, -1, dtype=np.int8)  # each cell's split (-1: dropped): no per-split sort
    small: list[str] = []
    for name, members in strata:
        if len(members) < len(active):
            if name != UNLABELED or labels is None:
                small.append(f"{shorten(name)} ({len(members)} cells)")
            if small_classes == "drop":
                continue
            counts = np.zeros(3, dtype=np.int64)
            if small_classes == "train":
                counts[0] = len(members)
            else:
                counts[active[: len(members)]] = 1
        else:
            counts = _allocate(len(members), frac)
        shuffled = members[_class_rng(seed, name).permutation(len(members))]
        for split, chunk in enumerate(np.split(shuffled, np.cumsum(counts)[:-1])):
            assigned[chunk] = split
    if small:
        warnings.warn(
            f"{len(small)} class(es) have fewer cells than the {len(active)} non-zero splits: "
            f"{', '.join(small)}; handled with small_classes={small_classes!r}.",
            UserWarning,
            stacklevel=2,
        )
    return {split: np.flatnonzero(assigned == s).astype(np.int64, copy=False) for s, split in enumerate(SPLIT_NAMES)}


def split_by_group(
    groups: Sequence | np.ndarray | pd.Series,
    held_out_groups: Iterable,
    *,
    val_groups: Iterable = (),
    val_fraction: float = 0.0,
    labels: Sequence | np.ndarray | pd.Series | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Cross-dataset split: whole groups (e.g. ``obs["source_file"]`` or a dataset name) are held out.

    Args:
        groups: group of each cell [N]; compared as text, so ``1`` and ``"1"`` are the same group.
        held_out_groups: groups whose cells form the test split.
        val_groups: groups whose cells form the validation split.
        val_fraction: when > 0 (and no ``val_groups``), this fraction of the remaining cells goes
            to validation, stratified by ``labels`` when given (see :func:`stratified_split`).
        labels: labels [N] used to stratify the ``val_fraction`` split.
        seed: seed of the ``val_fraction`` split.

    Returns:
        ``{"train", "val", "test"}`` → sorted int64 cell positions, disjoint, covering every cell.
    """
    names = pd.Series(np.asarray(groups, dtype=object)).astype(str).to_numpy()
    held_out = {str(g) for g in held_out_groups}
    val_named = {str(g) for g in val_groups}
    known = set(names)
    unknown = sorted((held_out | val_named) - known)
    if unknown:
        raise LangCellInputError(
            f"Group(s) {unknown} do not occur in the data.", f"Use names among {sorted(known)}."
        )
    if held_out & val_named:
        raise LangCellInputError(
            f"Group(s) {sorted(held_out & val_named)} are both held out (test) and validation groups.",
            "Give each group to one split only.",
        )
    if val_named and val_fraction > 0:
        raise LangCellInputError(
            "Both val_groups and val_fraction were given.", "Pick validation by groups or by fraction, not both."
        )
    if not 0.0 <= val_fraction < 1.0:
        raise LangCellInputError(f"val_fraction must be in [0, 1), got {val_fraction}.", "Pass e.g. 0.1.")
    test = np.flatnonzero(np.isin(names, list(held_out)))
    val = np.flatnonzero(np.isin(names, list(val_named)))
    pool = np.flatnonzero(~np.isin(names, list(held_out | val_named)))
    if len(pool) == 0:
        raise LangCellInputError(
            "Every cell belongs to a held-out or validation group: nothing is left to train on.",
            "Hold out fewer groups.",
        )
    train = pool
    if val_fraction > 0:
        pool_labels = None if labels is None else np.asarray(labels, dtype=object)[pool]
        inner = stratified_split(pool_labels, (1.0 - val_fraction, val_fraction, 0.0), seed, n_cells=len(pool))
        train, val = pool[inner["train"]], pool[inner["val"]]
    return {"train": train.astype(np.int64), "val": val.astype(np.int64), "test": test.astype(np.int64)}


def k_shot_indices(
    labels: Sequence | np.ndarray | pd.Series,
    k: int,
    seed: int = 0,
    exclude: Sequence[int] | np.ndarray | None = None,
    *,
    min_cells: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``k`` training cells per class (few-shot); the other labelled cells are the rest.

    Args:
        labels: one label per cell [N]; cells with a missing label are in neither output.
        k: training cells per class (≥ 1).
        seed: non-negative integer; the cells picked for ``k`` are a subset of those for ``k + 1``.
        exclude: cell positions left out of both outputs (e.g. a fixed validation set).
        min_cells: classes with fewer than ``min_cells`` eligible cells are dropped from both
            outputs (with a warning naming them). ``min_cells=k`` keeps every class that can give
            k cells; ``min_cells=k + 1`` also guarantees ≥ 1 evaluation cell per kept class.

    Returns:
        ``(train_idx, rest_idx)``: sorted int64 positions, disjoint; ``train_idx`` holds exactly
        ``k`` cells of every kept class.

    Raises:
        LangCellInputError: a kept class has fewer than ``k`` eligible cells (the message names
            each such class with its count).
    """
    seed = _check_seed(seed)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise LangCellInputError(f"k must be a positive integer (cells per class), got {k!r}.", "Pass e.g. k=5.")
    codes, classes = _class_codes(labels)
    eligible = codes >= 0
    if exclude is not None:
        excluded = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if excluded.size and (excluded.min() < 0 or excluded.max() >= len(codes)):
            raise LangCellInputError(
                f"exclude holds positions outside [0, {len(codes)}).", "Pass cell positions of these labels."
            )
        eligible[excluded] = False
    codes = np.where(eligible, codes, -1)
    strata = [(name, members) for name, members in _strata(codes, classes) if name != UNLABELED]
    counts = {str(name): len(members) for name, members in strata}
    if min_cells is not None:
        dropped = [f"{shorten(name)} ({n} cells)" for name, n in counts.items() if n < min_cells]
        if dropped:
            warnings.warn(
                f"Dropped {len(dropped)} class(es) with fewer than min_cells={min_cells} cells: {', '.join(dropped)}.",
                UserWarning,
                stacklevel=2,
            )
        strata = [(name, members) for name, members in strata if len(members) >= min_cells]
    too_small = [f"{shorten(name)} ({len(members)} cells)" for name, members in strata if len(members) < k]
    if too_small:
        smallest = min(len(members) for _, members in strata)
        raise LangCellInputError(
            f"{len(too_small)} class(es) have fewer than k={k} cells: {', '.join(too_small)}.",
            f"Lower k to at most {smallest}, or drop these classes with min_cells={k} "
            f"(min_cells={k + 1} also keeps ≥ 1 evaluation cell per class).",
        )
    if not strata:
        raise LangCellInputError("No class is left to sample from.", "Lower min_cells or check the labels.")
    train_parts, rest_parts = [], []
    for name, members in strata:
        shuffled = members[_class_rng(seed, name).permutation(len(members))]
        train_parts.append(shuffled[:k])
        rest_parts.append(shuffled[k:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(rest_parts))
