"""Integer codes of per-cell metadata columns: categorical columns through their own codes (no
per-cell Python work), others through ``pandas.factorize``; codes in the narrowest integer type."""

from __future__ import annotations

import numpy as np
import pandas as pd


def narrow_int(count: int) -> type:
    """The narrowest signed integer type holding -1 .. ``count``."""
    return next(t for t in (np.int8, np.int16, np.int32, np.int64) if count <= np.iinfo(t).max)


def value_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index | np.ndarray]:
    """(codes [N] with -1 for missing values, the values the codes name). A categorical column
    keeps its categories, unused ones included (see :func:`used_codes`); any other column is
    factorized (values in order of first appearance)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return np.asarray(values.cat.codes), values.cat.categories
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(narrow_int(len(uniques))), uniques


def used_codes(codes: np.ndarray, count: int) -> np.ndarray:
    """Bool [count]: which of the codes 0 .. count - 1 occur in ``codes`` (-1 ignored)."""
    used = np.zeros(count + 1, dtype=bool)  # the last entry takes code -1
    used[codes] = True
    return used[:count]


def combination_ids(codes: list[np.ndarray], counts: list[int]) -> tuple[np.ndarray, int]:
    """Per row, a dense id (int32, 0 .. K - 1, in sorted order of the value tuples) of its
    combination of codes (``codes[j]`` in -1 .. ``counts[j]`` - 1); and K. Each column is folded in
    by a table over the combinations seen so far (O(rows), no sort) while that table stays within
    the number of rows; beyond, by ``numpy.unique``."""
    rows = len(codes[0]) if codes else 0
    combination, count = np.zeros(rows, dtype=np.int32), 1
    for column_codes, values in zip(codes, counts):
        width = values + 1  # code -1 (missing) takes 0
        if count * width <= max(1 << 22, rows):
            folded = combination * np.int32(width) + column_codes + np.int32(1)
            used = np.zeros(count * width, dtype=bool)
            used[folded] = True
            remap = np.cumsum(used, dtype=np.int32) - np.int32(1)
            combination, count = remap[folded], int(remap[-1]) + 1
        else:
            folded = combination.astype(np.int64) * width + column_codes + 1
            distinct, inverse = np.unique(folded, return_inverse=True)
            combination, count = inverse.reshape(-1).astype(np.int32), len(distinct)
    return combination, count


def first_occurrences(ids: np.ndarray, count: int, chunk: int = 1 << 16) -> np.ndarray:
    """Row of the first occurrence of each id 0 .. ``count`` - 1 in ``ids`` (int64 [count]; -1 when
    absent), read in chunks of rows until every id is found (usually the first chunk)."""
    first = np.full(count, -1, dtype=np.int64)
    found = 0
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        new = first[part] < 0
        if new.any():
            distinct, where = np.unique(part[new], return_index=True)  # first index of each
            first[distinct] = start + np.flatnonzero(new)[where]
            found += len(distinct)
            if found == count:
                break
    return first
