"""Open an input, check it, and stream its cells as CSR chunks over vocabulary genes.

Shared by the tokenizer and by ``compute_gene_medians``: library size (``n_counts``),
``filter_pass``, gene mapping and the summing of source genes that reach one vocabulary
gene all happen here, once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

from lightning_langcell.tokenization.cell_source import CellSource, RowChunk
from lightning_langcell.tokenization.gene_ids import GeneMapping, resolve_genes
from lightning_langcell.tokenization.input_checks import (
    check_counts,
    check_n_counts_positive,
    check_orientation_and_mapping,
    check_unique_var_names,
    filter_pass_mask,
    obs_n_counts,
)
from lightning_langcell.tokenization.vocabulary import GeneVocabulary

BLOCK_ENTRIES = 1 << 17


@dataclasses.dataclass
class CountsChunk:
    """Kept cells of source rows ``[start, stop)`` as CSR over vocabulary genes.

    ``rows`` int64 source row of each kept cell; ``n_counts`` float64 library size per kept
    cell; ``indptr`` int64 (len(rows) + 1); ``token`` int32 token id of the gene and
    ``counts`` > 0 per entry, in the file's dtype (float64 where genes were summed); each gene
    at most once per cell. Consumers convert to float64 as they compute (exact for counts).
    """

    start: int
    stop: int
    rows: np.ndarray
    n_counts: np.ndarray
    indptr: np.ndarray
    token: np.ndarray
    counts: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


@dataclasses.dataclass
class OpenedInput:
    """An input whose genes are mapped and whose obs columns are checked."""

    source: CellSource
    mapping: GeneMapping
    passes: np.ndarray  # bool per cell (obs['filter_pass'] == 1, or all True)
    n_counts: np.ndarray | None  # float64 per cell from obs, or None -> row sums of X
    n_counts_source: str

    @property
    def name(self) -> str:
        return self.source.name


def open_input(item: Any, vocabulary: GeneVocabulary, species: str = "auto", n_counts_key: str = "n_counts") -> OpenedInput:
    """Open ``item`` (AnnData or .h5ad path) and run every check that needs no counts."""
    source = CellSource(item)
    try:
        where = source.name
        check_unique_var_names(source.var, where)
        mapping = resolve_genes(source.var, vocabulary, species)
        check_orientation_and_mapping(source.obs, source.var, mapping, vocabulary, where)
        passes = filter_pass_mask(source.obs, where)
        n_counts = obs_n_counts(source.obs, n_counts_key, where)
    except BaseException:
        source.close()
        raise
    n_counts_source = f"obs[{n_counts_key!r}]" if n_counts is not None else "row sums of X over all genes"
    return OpenedInput(source, mapping, passes, n_counts, n_counts_source)


@dataclasses.dataclass
class RawChunk:
    """Source rows ``[start, stop)`` as read and checked: CSR arrays over the file's genes,
    ``passes`` (bool per row) and ``n_counts`` (float64 per row)."""

    start: int
    stop: int
    raw: RowChunk
    passes: np.ndarray
    n_counts: np.ndarray


def iter_raw_chunks(opened: OpenedInput, chunk_size: int, assume_counts: bool) -> Iterator[RawChunk]:
    """Read ``opened`` by ``chunk_size`` source rows; counts checked, library sizes computed."""
    source = opened.source
    for start in range(0, source.shape[0], chunk_size):
        stop = min(start + chunk_size, source.shape[0])
        raw = source.read_rows(start, stop)
        check_counts(raw.data, assume_counts, f"{source.name} (X rows {start}-{stop})")
        n_counts = _row_sums(raw.data, raw.indptr) if opened.n_counts is None else opened.n_counts[start:stop]
        yield RawChunk(start, stop, raw, opened.passes[start:stop], n_counts)
        del raw, n_counts  # free this chunk before the next one is read


def iter_counts_blocks(
    opened: OpenedInput, chunk: RawChunk, vocab_size: int, n_counts_key: str = "n_counts", block_entries: int = BLOCK_ENTRIES
) -> Iterator[CountsChunk]:
    """The kept cells of ``chunk`` over vocabulary genes, in blocks of consecutive rows of about
    ``block_entries`` stored values (small enough to stay in CPU cache while ranked)."""
    indptr_all = chunk.raw.indptr
    targets = np.arange(block_entries, int(indptr_all[-1]), block_entries)
    bounds = np.unique(np.concatenate(([0], np.searchsorted(indptr_all, targets), [len(indptr_all) - 1])))
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        yield _counts_block(opened, chunk, first, last, vocab_size, n_counts_key)


def _counts_block(opened: OpenedInput, chunk: RawChunk, first: int, last: int, vocab_size: int, n_counts_key: str) -> CountsChunk:
    """Rows ``[first, last)`` of ``chunk`` (positions inside the chunk) as a ``CountsChunk``."""
    raw, mapping = chunk.raw, opened.mapping
    lo, hi = int(raw.indptr[first]), int(raw.indptr[last])
    data, row_ptr = raw.data[lo:hi], raw.indptr[first : last + 1] - lo
    passes = chunk.passes[first:last]
    token = np.take(mapping.token_id, raw.indices[lo:hi].astype(np.intp))  # intp indices: numpy's fast gather
    keep = token >= 0
    keep &= data != 0
    if not passes.all():
        keep &= np.repeat(passes, np.diff(row_ptr))
    if passes.all() and keep.all():
        indptr, counts = row_ptr, data
    else:
        kept_before = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        lengths = np.diff(kept_before[row_ptr])[passes]
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        token, counts = token[keep], data[keep]
    if mapping.n_merged:
        token, counts, indptr = _sum_shared_genes(token, counts.astype(np.float64), indptr, vocab_size)
    rows = chunk.start + first + np.flatnonzero(passes)
    n_counts = np.asarray(chunk.n_counts[first:last], dtype=np.float64)[passes]
    where = f"{opened.name} (X rows {chunk.start + first}-{chunk.start + last})"
    check_n_counts_positive(n_counts, np.diff(indptr), n_counts_key, where)
    return CountsChunk(chunk.start + first, chunk.start + last, rows, n_counts, indptr, token, counts)


def _row_sums(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """float64 total per row (all genes of the file)."""
    sums = np.zeros(len(indptr) - 1, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if nonempty.size:
        sums[nonempty] = np.add.reduceat(data, indptr[nonempty], dtype=np.float64)
    return sums


def _sum_shared_genes(token: np.ndarray, counts: np.ndarray, indptr: np.ndarray, vocab_size: int) -> tuple:
    """Sum entries of one cell that reach the same token (sorts tokens per cell)."""
    matrix = sp.csr_matrix((counts, token, indptr), shape=(len(indptr) - 1, vocab_size))
    matrix.sum_duplicates()
    return matrix.indices.astype(np.int32, copy=False), matrix.data, matrix.indptr.astype(np.int64)
