"""Column codes: dense combination ids (table and sort paths agree) and first occurrences."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lightning_langcell.column_codes import combination_ids, first_occurrences, used_codes, value_codes


def _reference(codes: list[np.ndarray]) -> np.ndarray:
    """Dense ids of the row tuples in sorted order, by numpy.unique over the rows."""
    return np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)


def test_combination_ids_are_the_sorted_tuple_ranks_on_both_paths(monkeypatch):
    rng = np.random.default_rng(0)
    codes = [rng.integers(-1, 5, 5000).astype(np.int8), rng.integers(-1, 300, 5000).astype(np.int16),
             rng.integers(-1, 3, 5000).astype(np.int8)]
    counts = [5, 300, 3]
    table, count = combination_ids(codes, counts)
    assert table.dtype == np.int32 and count == len(np.unique(np.stack(codes, axis=1), axis=0))
    np.testing.assert_array_equal(table, _reference(codes))
    import lightning_langcell.column_codes as module

    monkeypatch.setattr(module, "max", lambda *values: 0, raising=False)  # every fold by numpy.unique
    by_sort, sort_count = combination_ids(codes, counts)
    np.testing.assert_array_equal(by_sort, table)
    assert sort_count == count


def test_first_occurrences_across_chunks():
    ids = np.array([3, 3, 1, 0, 1, 3, 2, 2, 0], dtype=np.int32)
    np.testing.assert_array_equal(first_occurrences(ids, 5, chunk=2), [3, 2, 6, 0, -1])
    np.testing.assert_array_equal(first_occurrences(ids, 4, chunk=100), [3, 2, 6, 0])


def test_value_codes_keep_categorical_codes_narrow():
    column = pd.Series(pd.Categorical(["b", None, "b", "a"], categories=["a", "b", "unused"]))
    codes, values = value_codes(column)
    assert codes.dtype == np.int8 and codes.tolist() == [1, -1, 1, 0] and list(values) == ["a", "b", "unused"]
    assert used_codes(codes, 3).tolist() == [True, True, False]
    codes, values = value_codes(pd.Series(["x", "y", None, "x"]))
    assert codes.dtype == np.int8 and codes.tolist() == [0, 1, -1, 0] and list(values) == ["x", "y"]
