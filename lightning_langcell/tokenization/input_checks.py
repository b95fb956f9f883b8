"""Checks on user data before and while tokenising; each failure is one ``LangCellInputError``
that names the problem and the fix."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError, shorten
from lightning_langcell.tokenization.gene_ids import (GeneMapping, clean_strings, detect_species, resolve_identifiers,
                                                      token_lookup)
from lightning_langcell.tokenization.vocabulary import GeneVocabulary

CELL_BARCODE = re.compile(r"^(?:[A-Za-z0-9]+[_:.-])?[ACGTN]{8,}(?:[_:.-][A-Za-z0-9]+)?$")
INTEGER_SAMPLE = 100_000
NAME_SAMPLE = 2_000
WARN_GENE_COVERAGE = 0.5  # below this fraction of a file's genes in the vocabulary: a warning
MIN_GENE_COVERAGE = 0.1  # default floor: below it tokenizing is refused unless overridden


def check_counts(data: np.ndarray, assume_counts: bool, where: str) -> None:
    """Refuse negative / NaN / infinite values (all checked) and non-integers (a strided sample
    of at most 100,000 values per chunk) unless ``assume_counts``."""
    if data.size == 0:
        return
    if data.dtype.kind in "iu":
        if data.dtype.kind == "i" and data.min() < 0:
            raise _negative(where)
        return
    low, high = data.min(), data.max()  # NaN propagates to both; two reads, no temporary array
    if not (np.isfinite(low) and np.isfinite(high)):
        finite = np.isfinite(data)
        if not finite.all():
            raise LangCellInputError(
                f"{where} contains {int(data.size - np.count_nonzero(finite))} NaN or infinite value(s).",
                "Tokenize raw counts: replace missing values (e.g. `X.data = np.nan_to_num(X.data)`) or drop those cells.",
            )
    if low < 0:
        raise _negative(where)
    if assume_counts:
        return
    sample = data[:: max(1, data.size // INTEGER_SAMPLE)]
    fractional = sample[sample != np.round(sample)]
    if fractional.size:
        raise LangCellInputError(
            f"{where} does not look like raw counts: {fractional.size} of {sample.size} sampled values are not "
            f"integers (e.g. {fractional[:3].tolist()}); log-normalised or scaled data ranks genes wrongly.",
            "Tokenize raw integer counts (e.g. `adata.layers['counts']` or `adata.raw`), "
            "or pass assume_counts=True if non-integer values are intended (e.g. ambient-corrected counts).",
        )


def _negative(where: str) -> LangCellInputError:
    return LangCellInputError(
        f"{where} contains negative values, so it is not a counts matrix (scaled or centred data?).",
        "Tokenize raw, non-negative counts (e.g. `adata.layers['counts']` or `adata.raw`).",
    )


def check_unique_var_names(var: pd.DataFrame, where: str) -> None:
    """Duplicate var_names make genes ambiguous."""
    names = pd.Index(var.index)
    if names.has_duplicates:
        duplicated = names[names.duplicated()].unique()
        raise LangCellInputError(
            f"{where} has {len(duplicated)} duplicated gene name(s) in var_names (e.g. {list(duplicated[:3])}).",
            "Sum or drop the duplicated genes first, e.g. `adata = adata[:, ~adata.var_names.duplicated()].copy()`; "
            "genes with distinct var_names that share one Ensembl id are summed automatically.",
        )


def _barcode_fraction(names: np.ndarray) -> float:
    sample = names[: NAME_SAMPLE]
    return float(np.mean([bool(CELL_BARCODE.match(name)) for name in sample])) if sample.size else 0.0


def _gene_fraction(names: np.ndarray, vocabulary: GeneVocabulary) -> float:
    sample = names[: NAME_SAMPLE]
    if not sample.size:
        return 0.0
    lookup = token_lookup(vocabulary)
    _, position, _ = resolve_identifiers(sample, lookup, detect_species(sample, lookup.index))
    return float(np.mean(position >= 0))


def check_orientation_and_mapping(
    obs: pd.DataFrame, var: pd.DataFrame, mapping: GeneMapping, vocabulary: GeneVocabulary, where: str
) -> None:
    """Refuse a cells x genes matrix stored transposed, and a file none of whose genes maps."""
    tokenised = mapping.n_tokenised / max(1, mapping.token_id.size)
    if tokenised < 0.05:
        obs_names, var_names = clean_strings(obs.index), clean_strings(var.index)
        if _gene_fraction(obs_names, vocabulary) > 0.5 or _barcode_fraction(var_names) > 0.5:
            raise LangCellInputError(
                f"{where} looks transposed: obs_names look like genes (e.g. {list(obs_names[:3])}) "
                f"and var_names like cells (e.g. {list(var_names[:3])}).",
                "Store cells as rows and genes as columns: `adata = adata.T.copy()` then save again.",
            )
    if mapping.n_tokenised == 0:
        counts = mapping.counts()
        raise LangCellInputError(
            f"None of the {counts['genes_total']} genes of {where} maps to the vocabulary "
            f"(ids from {mapping.id_source}, species {mapping.species}; unmapped {counts['genes_unmapped']}, "
            f"outside the vocabulary {counts['genes_outside_vocabulary']}; e.g. {list(mapping.unmapped_examples[:3])}).",
            "Give human Ensembl ids (var['ensembl_id'] or var_names like ENSG00000141510), human gene symbols, "
            "or mouse ids/symbols (species='mouse'); for other symbols add a var['ensembl_id'] column.",
        )


def filter_pass_mask(obs: pd.DataFrame, where: str) -> np.ndarray:
    """bool per cell: True where ``obs['filter_pass']`` is 1 (missing column: every cell passes)."""
    if "filter_pass" not in obs.columns:
        return np.ones(len(obs), dtype=bool)
    values = pd.to_numeric(pd.Series(np.asarray(obs["filter_pass"])), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise LangCellInputError(
            f"obs['filter_pass'] of {where} must hold 0/1 or booleans; {int(bad.sum())} value(s) are something else.",
            "Set obs['filter_pass'] to 1 for cells to tokenise and 0 for cells to skip, or drop the column.",
        )
    return values == 1.0


def obs_n_counts(obs: pd.DataFrame, key: str, where: str) -> np.ndarray | None:
    """float64 per cell from ``obs[key]`` (None when the column is absent); finite and >= 0."""
    if key not in obs.columns:
        return None
    values = pd.to_numeric(pd.Series(np.asarray(obs[key])), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        raise LangCellInputError(
            f"obs[{key!r}] of {where} has {int(bad.sum())} missing, negative or infinite value(s).",
            f"Set obs[{key!r}] to each cell's total counts over all genes, or drop it to use the row sums of X.",
        )
    return values


def check_n_counts_positive(n_counts: np.ndarray, lengths: np.ndarray, key: str, where: str) -> None:
    """Cells with detected genes need a library size > 0."""
    bad = (n_counts <= 0) & (lengths > 0)
    if bad.any():
        raise LangCellInputError(
            f"{int(bad.sum())} cell(s) of {where} have counts but obs[{key!r}] <= 0.",
            f"Set obs[{key!r}] to each cell's total counts over all genes, or drop it to use the row sums of X.",
        )


def check_cells_present(n_cells: int, where: str) -> None:
    """A file without cells would become an empty corpus that fails only later, in training."""
    if n_cells == 0:
        raise LangCellInputError(
            f"{where} has 0 cells (X has no rows).",
            "Pass a file with cells; check the filtering step that wrote it.",
        )


def check_gene_coverage(mapping: GeneMapping, min_coverage: float, where: str) -> float:
    """Fraction of the file's genes that reach the vocabulary: a warning below 50 %, an error
    below ``min_coverage`` (a fraction of the tokens would otherwise be lost in silence)."""
    total = int(mapping.token_id.size)
    coverage = mapping.n_tokenised / max(1, total)
    if coverage >= WARN_GENE_COVERAGE:
        return coverage
    problem = (
        f"Only {mapping.n_tokenised:,} of the {total:,} genes of {shorten(where)} ({coverage:.1%}) map to the gene "
        f"vocabulary (ids read from {mapping.id_source}, species {mapping.species}; unmapped e.g. "
        f"{shorten(list(mapping.unmapped_examples[:3]))}): the cells lose the expression of every other gene."
    )
    fix = (
        "Check the gene identifiers: human Ensembl ids (var['ensembl_id'] or var_names like ENSG00000141510) "
        "map best; gene symbols must be of the data's species (species='human' or 'mouse'); map genes of "
        "other species to their human orthologs first"
    )
    if coverage < min_coverage:
        raise LangCellInputError(
            f"{problem} This is below min_gene_coverage={min_coverage:.0%}.",
            f"{fix}; or lower min_gene_coverage (tokenize --min-gene-coverage) to tokenize it anyway.",
        )
    warnings.warn(f"{problem} {fix}.", UserWarning, stacklevel=4)
    return coverage
