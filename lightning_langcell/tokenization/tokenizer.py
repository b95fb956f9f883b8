"""``CellTokenizer``: cells (AnnData or .h5ad) -> rank-value gene token ids, streamed by chunks.

Per cell: n_counts = ``obs["n_counts"]`` when present, else the cell's total over all genes
of the file; cells with ``obs["filter_pass"] == 0`` are skipped (no column: all pass);
value = count / n_counts * 10000 / median; non-zero genes ranked by value descending (equal
values: token id ascending), at most ``max_genes`` kept. Tokens exclude ``<cls>``: the
model's collator prepends it (and then keeps ``<cls>`` + the top 2047 genes, as the official
code does).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization.counts_chunks import CountsChunk, iter_counts_blocks, iter_raw_chunks, open_input
from lightning_langcell.tokenization.gene_ids import SPECIES
from lightning_langcell.tokenization.input_checks import MIN_GENE_COVERAGE, check_cells_present, check_gene_coverage
from lightning_langcell.tokenization.rank_value import RankedCells, rank_value_encode, split_flat
from lightning_langcell.tokenization.vocabulary import GeneVocabulary

ALGORITHM = "rank_value/geneformer-30m-v1"


@dataclasses.dataclass
class TokenizationReport:
    """What happened to the cells and genes of the last input tokenised."""

    source: str = ""
    species: str = ""
    gene_id_source: str = ""
    n_counts_source: str = ""
    cells_seen: int = 0
    cells_tokenized: int = 0
    cells_skipped_filter_pass: int = 0
    cells_empty: int = 0
    cells_dropped_empty: int = 0
    cells_truncated: int = 0
    genes_total: int = 0
    gene_coverage: float = 0.0
    genes_mapped_by_ensembl: int = 0
    genes_mapped_by_symbol: int = 0
    genes_mapped_by_ortholog: int = 0
    genes_unmapped: int = 0
    genes_outside_vocabulary: int = 0
    genes_summed_into_shared_token: int = 0
    unmapped_examples: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenizedChunk:
    """Tokenised cells of one chunk.

    ``flat_tokens``: int32, every kept cell's tokens concatenated; ``lengths``: int64 tokens per
    cell; ``obs``: their obs rows; ``rows``: int64 row positions in the source; ``tokens``: one
    int32 array per cell (views into ``flat_tokens``, made on first access); ``values``: float64
    normalised value of each token, per cell (only with ``with_values=True``).
    """

    obs: pd.DataFrame
    rows: np.ndarray
    flat_tokens: np.ndarray
    lengths: np.ndarray
    flat_values: np.ndarray | None = None

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.lengths)))

    @functools.cached_property
    def tokens(self) -> list[np.ndarray]:
        return split_flat(self.flat_tokens, self.offsets)

    @functools.cached_property
    def values(self) -> list[np.ndarray] | None:
        return None if self.flat_values is None else split_flat(self.flat_values, self.offsets)


class CellTokenizer:
    """Rank-value tokenizer over a ``GeneVocabulary`` (bundled Geneformer-30M by default).

    ``gene_median`` / ``token_dictionary``: dict or JSON path (None: bundled). ``max_genes``:
    genes kept per cell (None: all). ``assume_counts``: accept non-integer values.
    ``keep_empty``: keep cells without any vocabulary gene as empty token lists (default:
    drop them, counted in ``report.cells_dropped_empty``; an empty cell carries no information
    to train on or to annotate). ``chunk_size``: cells read per chunk (bounds memory).
    ``species``: "auto", "human" or "mouse" (how gene symbols are read). ``n_counts_key``: obs
    column of library sizes. ``min_gene_coverage``: refuse a file when fewer than this fraction
    of its genes map to the vocabulary (below 50 % a warning names the fraction).
    """

    def __init__(
        self,
        gene_median: Any = None,
        token_dictionary: Any = None,
        max_genes: int | None = 2048,
        assume_counts: bool = False,
        keep_empty: bool = False,
        chunk_size: int = 4096,
        species: str = "auto",
        n_counts_key: str = "n_counts",
        min_gene_coverage: float = MIN_GENE_COVERAGE,
    ):
        if max_genes is not None and (not isinstance(max_genes, (int, np.integer)) or max_genes < 1):
            raise LangCellInputError(f"max_genes must be a positive integer or None, got {max_genes!r}.", "Use e.g. max_genes=2048.")
        _check_chunk_size(chunk_size)
        if species not in SPECIES:
            raise LangCellInputError(f"species must be one of {SPECIES}, got {species!r}.", "Use species='auto'.")
        self.vocabulary = GeneVocabulary.from_sources(token_dictionary=token_dictionary, gene_median=gene_median)
        self.max_genes = None if max_genes is None else int(max_genes)
        self.assume_counts = bool(assume_counts)
        self.keep_empty = bool(keep_empty)
        self.chunk_size = int(chunk_size)
        self.species = species
        self.n_counts_key = n_counts_key
        if not 0.0 <= float(min_gene_coverage) <= 1.0:
            raise LangCellInputError(f"min_gene_coverage must be in [0, 1], got {min_gene_coverage!r}.",
                                     f"Use e.g. min_gene_coverage={MIN_GENE_COVERAGE}.")
        self.min_gene_coverage = float(min_gene_coverage)  # refuses inputs, never changes tokens
        self.report = TokenizationReport()

    def settings(self) -> dict:
        """JSON-able settings; everything that changes the tokens, plus ``chunk_size``."""
        return {
            "algorithm": ALGORITHM,
            "vocabulary_checksum": self.vocabulary.checksum,
            "gene_median_checksum": self.vocabulary.median_checksum,
            "vocab_size": len(self.vocabulary),
            "max_genes": self.max_genes,
            "assume_counts": self.assume_counts,
            "keep_empty": self.keep_empty,
            "species": self.species,
            "n_counts_key": self.n_counts_key,
            "shared_genes": "sum",
            "tie_order": "token_id_ascending",
            "chunk_size": self.chunk_size,
        }

    def __repr__(self) -> str:
        return f"CellTokenizer({self.vocabulary!r}, max_genes={self.max_genes})"

    def tokenize(self, adata_or_path: Any) -> list[np.ndarray]:
        """Ranked gene token ids (int32, without ``<cls>``) of every kept cell, in obs order."""
        tokens: list[np.ndarray] = []
        for chunk in self.iter_chunks(adata_or_path):
            tokens.extend(chunk.tokens)
        return tokens

    def iter_chunks(
        self, adata_or_path: Any, chunk_size: int | None = None, with_values: bool = False
    ) -> Iterator[TokenizedChunk]:
        """Tokenise ``chunk_size`` source cells at a time (a path is streamed from disk);
        ``self.report`` is updated per chunk. ``with_values`` also returns the normalised values."""
        chunk_size = self.chunk_size if chunk_size is None else _check_chunk_size(chunk_size)
        opened = open_input(adata_or_path, self.vocabulary, self.species, self.n_counts_key)
        with opened.source:
            check_cells_present(opened.source.shape[0], opened.name)
            coverage = check_gene_coverage(opened.mapping, self.min_gene_coverage, opened.name)
            report = self._start_report(opened)
            report.gene_coverage = round(coverage, 4)
            for raw in iter_raw_chunks(opened, chunk_size, self.assume_counts):
                yield self._tokenize_chunk(opened, raw, with_values, report)
                del raw  # free this chunk before the next one is read

    def _tokenize_chunk(self, opened: Any, raw: Any, with_values: bool, report: TokenizationReport) -> TokenizedChunk:
        """Rank one raw chunk block by block, each block writing its tokens into its slice of one buffer."""
        blocks = list(iter_counts_blocks(opened, raw, len(self.vocabulary), self.n_counts_key))
        sizes = [int(np.minimum(b.lengths, self.max_genes or np.iinfo(np.int64).max).sum()) for b in blocks]
        starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).tolist()
        flat = np.empty(starts[-1], dtype=np.int32)
        ranked = [self._rank(block, with_values, out=flat[start:stop])
                  for block, start, stop in zip(blocks, starts[:-1], starts[1:])]
        rows = np.concatenate([block.rows for block in blocks])
        lengths = np.concatenate([np.diff(r.indptr) for r in ranked])
        full_lengths = np.concatenate([r.full_lengths for r in ranked])
        empty = full_lengths == 0
        report.cells_seen += raw.stop - raw.start
        report.cells_skipped_filter_pass += raw.stop - raw.start - rows.size
        report.cells_empty += int(empty.sum())
        if self.max_genes is not None:
            report.cells_truncated += int(np.count_nonzero(full_lengths > self.max_genes))
        if not self.keep_empty and empty.any():
            report.cells_dropped_empty += int(empty.sum())
            rows, lengths = rows[~empty], lengths[~empty]
        report.cells_tokenized += rows.size
        values = np.concatenate([r.values for r in ranked]) if with_values else None
        return TokenizedChunk(opened.source.obs.iloc[rows], rows, flat, lengths, values)

    def _rank(self, counts: CountsChunk, with_values: bool, out: np.ndarray | None = None) -> RankedCells:
        vocabulary = self.vocabulary
        return rank_value_encode(
            counts.counts, counts.token, counts.indptr, counts.n_counts,
            vocabulary.median_by_token, self.max_genes, return_values=with_values, out=out,
        )

    def _start_report(self, opened: Any) -> TokenizationReport:
        self.report = TokenizationReport(
            source=opened.name,
            species=opened.mapping.species,
            gene_id_source=opened.mapping.id_source,
            n_counts_source=opened.n_counts_source,
            unmapped_examples=list(opened.mapping.unmapped_examples),
            **opened.mapping.counts(),
        )
        return self.report


def _check_chunk_size(chunk_size: Any) -> int:
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise LangCellInputError(f"chunk_size must be a positive integer, got {chunk_size!r}.", "Use e.g. chunk_size=4096.")
    return int(chunk_size)
