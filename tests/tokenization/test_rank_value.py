"""rank_value_encode against a plain per-cell lexsort, on adversarial near-ties and long cells."""

import numpy as np
import pytest

from lightning_langcell.tokenization import rank_value_encode, same_ranking


def _reference(counts, token, indptr, n_counts, median_by_token, max_genes):
    """Per cell: value = count / n * 10000 / median; order by (value desc, token asc)."""
    out = []
    for i in range(len(indptr) - 1):
        c, t = counts[indptr[i] : indptr[i + 1]], token[indptr[i] : indptr[i + 1]]
        values = c / n_counts[i] * 10000 / median_by_token[t]
        order = np.lexsort((t, -values))
        out.append((t[order][:max_genes], values[order][:max_genes]))
    return out


def _check(counts, token, indptr, n_counts, median_by_token, max_genes=None):
    ranked = rank_value_encode(counts, token, indptr, n_counts, median_by_token, max_genes, return_values=True)
    expected = _reference(counts, token, indptr, n_counts, median_by_token, max_genes)
    for i, (want_tokens, want_values) in enumerate(expected):
        lo, hi = ranked.indptr[i], ranked.indptr[i + 1]
        assert np.array_equal(ranked.tokens[lo:hi], want_tokens)
        assert np.array_equal(ranked.values[lo:hi], want_values)
    assert np.array_equal(ranked.full_lengths, np.diff(indptr))
    return ranked


def _cells(rng, n_cells, n_tokens, median_by_token, length_range):
    lengths = rng.integers(*length_range, size=n_cells)
    lengths[rng.random(n_cells) < 0.1] = 0  # some empty cells
    token = np.concatenate([rng.choice(n_tokens, size=n, replace=False) for n in lengths]).astype(np.int32)
    counts = rng.integers(1, 6, size=token.size).astype(np.float64)
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    n_counts = rng.integers(500, 5000, size=n_cells).astype(np.float64)
    return counts, token, indptr, n_counts


def test_exact_ties_and_one_ulp_apart_values():
    rng = np.random.default_rng(0)
    base = rng.choice([0.5, 1.0, 2.0, 3.0], size=3000)
    # medians equal or 1-3 ulps apart: exact ties and near-ties everywhere
    median_by_token = base.copy()
    bump = rng.integers(0, 4, size=base.size)
    for _ in range(3):
        median_by_token = np.where(bump > 0, np.nextafter(median_by_token, np.inf), median_by_token)
        bump -= 1
    counts, token, indptr, n_counts = _cells(rng, 40, 3000, median_by_token, (0, 2500))
    ranked = _check(counts, token, indptr, n_counts, median_by_token)
    assert np.count_nonzero(ranked.values[1:] == ranked.values[:-1]) > 1000


@pytest.mark.parametrize("max_genes", [None, 1, 100])
def test_random_cells_and_truncation(max_genes):
    rng = np.random.default_rng(1)
    median_by_token = rng.lognormal(0, 1, size=5000)
    _check(*_cells(rng, 60, 5000, median_by_token, (0, 300)), median_by_token, max_genes)


def test_cell_longer_than_uint32_keys_allow():
    """> 2^16 genes in one cell switches to uint64 keys; same result."""
    rng = np.random.default_rng(2)
    median_by_token = rng.choice([1.0, 1.5, 2.0], size=70_000) * rng.choice([1.0, 1.0 + 2**-40], size=70_000)
    counts, token, indptr, n_counts = _cells(rng, 2, 70_000, median_by_token, (66_000, 70_000))
    _check(counts, token, indptr, n_counts, median_by_token, max_genes=2048)


def test_wide_value_range_in_one_cell():
    """Values spanning ~2^60 force a large shift: more near-ties, still exact."""
    median_by_token = np.array([1e-9, 1.0, 1e9, 3.0, 3.0 + 1e-12, 7.0])
    counts = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 5.0])
    _check(counts, np.arange(6, dtype=np.int32), np.array([0, 6]), np.array([10.0]), median_by_token)


def test_same_ranking_helper():
    assert same_ranking([5, 6, 7], [6, 5, 7], [2.0, 2.0, 1.0])
    assert not same_ranking([5, 6, 7], [5, 7, 6], [2.0, 2.0, 1.0])
    assert not same_ranking([5, 6], [5, 6, 7], [2.0, 1.0])
