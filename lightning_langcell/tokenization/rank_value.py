"""Rank-value encoding of many cells at once, on CSR arrays (no densifying).

value = count / n_counts * 10000 / median[gene] (float64, in that order, as the official
code), genes ranked by value descending; exactly equal values are ordered by token id
ascending, so the output does not depend on the gene order of the file nor on the CPU.

How the ranking is done: every non-zero gets one integer key. The bit pattern of a positive
float64 is monotonic in its value, so ``d = bits(the cell's largest value) - bits(value)``
ascends from 0 as the value descends; ``d``, shifted right just enough to fit, fills the high
bits and the entry's position in its cell fills the low P bits
(uint32 keys when cells hold < 2^16 genes: a 2,000-gene cell keeps ~2^-15 relative
resolution). Each cell's keys are contiguous in CSR order and are sorted in place, one C call
per cell: n log n per cell, instead of one ``np.lexsort`` over a whole chunk. Keys that agree
in their value bits (near-ties, exact ties included: few in real data) are then put in exact order by (value desc,
token asc) with one lexsort over those few entries.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

_MAX_POSITIVE_BITS = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


class RankedCells(NamedTuple):
    """Ranked genes of ``len(indptr) - 1`` cells, flat: cell i is ``[indptr[i], indptr[i+1])``.

    ``tokens`` int32, truncated to ``max_genes`` per cell; ``values`` float64 normalised values
    aligned with ``tokens`` (None unless asked for); ``full_lengths`` int64: genes per cell
    before truncation.
    """

    tokens: np.ndarray
    values: np.ndarray | None
    indptr: np.ndarray
    full_lengths: np.ndarray

    def split(self) -> list[np.ndarray]:
        """One int32 array per cell (views into ``tokens``)."""
        return split_flat(self.tokens, self.indptr)


def split_flat(flat: np.ndarray, indptr: np.ndarray) -> list[np.ndarray]:
    """``[flat[indptr[i]:indptr[i + 1]] for each i]`` as views (faster than ``np.split``)."""
    bounds = np.asarray(indptr).tolist()
    return [flat[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def normalized_values(counts: np.ndarray, n_counts_per_entry: np.ndarray, medians_per_entry: np.ndarray,
                      out: np.ndarray | None = None) -> np.ndarray:
    """count / n_counts * 10000 / median, float64, in that operation order (into ``out`` when given)."""
    values = np.divide(counts, n_counts_per_entry, out=out, dtype=np.float64)
    values *= 10000.0
    values /= medians_per_entry
    return values


def rank_value_encode(
    counts: np.ndarray,
    token: np.ndarray,
    indptr: np.ndarray,
    n_counts: np.ndarray,
    median_by_token: np.ndarray,
    max_genes: int | None,
    return_values: bool = False,
    out: np.ndarray | None = None,
) -> RankedCells:
    """Rank the genes of each cell.

    ``counts``: float64 > 0 per entry; ``token``: int token id per entry; ``indptr``: int64 CSR
    row pointer (cells); ``n_counts``: float64 per cell (> 0 where the cell has entries);
    ``median_by_token``: float64 gene median indexed by token id. A cell holds each token once. Meant for
    blocks of ~10^5 entries (cache-sized); the low bits of each key hold the entry's index.
    ``out``: optional int32 buffer (at least as long as the output) that receives the tokens.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n_entries, lengths = int(indptr[-1]), np.diff(indptr)
    medians = np.take(median_by_token, token.astype(np.intp, copy=False))  # intp indices: numpy's fast gather
    n_counts_per_entry = np.repeat(n_counts, lengths).astype(np.float64, copy=False)
    values = normalized_values(counts, n_counts_per_entry, medians, out=n_counts_per_entry)
    if n_entries == 0:
        return RankedCells(np.zeros(0, dtype=np.int32), values if return_values else None, indptr, lengths)
    max_length = int(lengths.max())
    position_bits = max(1, (max_length - 1).bit_length())
    key_type = np.uint32 if position_bits <= 16 and n_entries < 2**32 else np.uint64
    starts = np.repeat(indptr[:-1].astype(key_type), lengths)
    position = np.arange(n_entries, dtype=key_type)
    position -= starts
    keys = _rank_keys(values, indptr, lengths, position, position_bits)
    _sort_segments(keys, indptr)
    order = np.add(keys & key_type((1 << position_bits) - 1), starts, dtype=np.intp)
    truncate = max_genes is not None and max_length > max_genes
    direct = out is not None and not truncate and token.dtype == np.int32
    tokens = np.take(token, order, out=out[:n_entries] if direct else None).astype(np.int32, copy=False)
    keys >>= key_type(position_bits)
    sorted_values = _order_near_ties(keys, indptr, order, tokens, values, return_values)
    if truncate:
        kept_lengths = np.minimum(lengths, max_genes)
        kept = _first_of_each_cell(tokens, indptr, max_genes, None if out is None else out[: int(kept_lengths.sum())])
        kept_values = None if sorted_values is None else _first_of_each_cell(sorted_values, indptr, max_genes)
        return RankedCells(kept, kept_values, _offsets(kept_lengths), lengths)
    if out is not None and not direct:
        out[:n_entries] = tokens
        tokens = out[:n_entries]
    return RankedCells(tokens, sorted_values, indptr, lengths)


def _rank_keys(values: np.ndarray, indptr: np.ndarray, lengths: np.ndarray, position: np.ndarray,
               position_bits: int) -> np.ndarray:
    """Sort keys, of ``position``'s dtype (uint32 when cells hold < 2^16 entries, else uint64).

    key = ((bits(cell's largest value) - bits(value)) >> shift) << P | position in cell: ascending
    key = descending value; the shift drops low bits so the key fits, values closer than that are
    near-ties, put in exact order afterwards.
    """
    key_type = position.dtype.type
    bits = values.view(np.uint64)
    nonempty = lengths > 0
    below_top = np.repeat(np.maximum.reduceat(bits, indptr[:-1][nonempty]), lengths[nonempty])
    below_top -= bits
    value_bits = 8 * position.dtype.itemsize - position_bits
    shift = max(0, int(below_top.max()).bit_length() - value_bits)
    if shift:
        below_top >>= np.uint64(shift)
    keys = below_top.astype(key_type)
    keys <<= key_type(position_bits)
    keys |= position
    return keys


def _sort_segments(keys: np.ndarray, indptr: np.ndarray) -> None:
    """Sort ``keys[indptr[i]:indptr[i+1]]`` in place for every i."""
    bounds = indptr.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop - start > 1:
            keys[start:stop].sort()


def _order_near_ties(
    value_keys: np.ndarray, indptr: np.ndarray, order: np.ndarray, tokens: np.ndarray, values: np.ndarray, return_values: bool
) -> np.ndarray | None:
    """Within runs of equal ``value_keys`` of one cell, order by (value desc, token asc): fixes
    ``order`` and ``tokens`` in place; returns the sorted values when ``return_values``."""
    same = value_keys[1:] == value_keys[:-1]
    boundaries = indptr[1:-1]
    same[boundaries[(boundaries > 0) & (boundaries < len(value_keys))] - 1] = False
    pairs = np.flatnonzero(same)  # entry i and i + 1 are near-tied
    if pairs.size:
        members = np.union1d(pairs, pairs + 1)
        linked = np.zeros(members.size, dtype=bool)  # member joined to the one before it
        linked[1:] = same[members[1:] - 1]
        run_id = np.cumsum(~linked)
        fixed = np.lexsort((tokens[members], -values[order[members]], run_id))
        tokens[members] = tokens[members[fixed]]
        order[members] = order[members[fixed]]
    return values[order] if return_values else None


def _first_of_each_cell(flat: np.ndarray, indptr: np.ndarray, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """The first ``count`` entries of every cell of ``flat``, concatenated (one copy per cell
    instead of a boolean mask over every entry)."""
    bounds = indptr.tolist()
    return np.concatenate([flat[start:min(stop, start + count)] for start, stop in zip(bounds[:-1], bounds[1:])], out=out)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr


def same_ranking(expected: Sequence[int], actual: Sequence[int], expected_values: Sequence[float]) -> bool:
    """True when ``actual`` equals ``expected`` up to the order inside groups of exactly equal
    ``expected_values`` (the ranks of tied genes are interchangeable)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    values = np.asarray(expected_values, dtype=np.float64)[: len(expected)]
    if expected.shape != actual.shape:
        return False
    if expected.size == 0:
        return True
    group = np.concatenate(([0], np.cumsum(values[1:] != values[:-1])))
    return bool(np.array_equal(expected[np.lexsort((expected, group))], actual[np.lexsort((actual, group))]))
