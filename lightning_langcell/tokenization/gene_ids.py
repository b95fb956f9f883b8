"""Map a file's genes (``var``) to the vocabulary's human Ensembl ids.

Where the identifiers come from, in order: ``var["ensembl_id"]``, ``var["feature_id"]``
(CELLxGENE), else ``var_names``. A blank identifier falls back to the gene's symbol
(``var_names`` when the ids came from a column, else ``var["gene_symbol"]`` /
``var["feature_name"]``). Each identifier then takes one route:

- Ensembl id (``ENSG...``, version and ``_PAR_Y`` suffixes stripped) -> itself;
- mouse Ensembl id (``ENSMUSG...``) -> human ortholog (bundled ortholog table);
- symbol -> human Ensembl id through Geneformer's ``gene_name_id_dict`` (plus GENCODE
  v48/v44 symbols it lacks); for mouse data (detected, or ``species="mouse"``), mouse symbol
  -> human ortholog.

Several source genes reaching the same vocabulary gene (e.g. ``PISD`` and ``Pisd`` with one
Ensembl id, or two mouse paralogs with one human ortholog) have their counts **summed**, so
each token appears at most once per cell (the official code would emit it twice).
Duplicated ``var_names`` are refused instead (``input_checks``). Report categories: mapped
by Ensembl id / by symbol / by ortholog; outside the vocabulary (a human Ensembl id without a
median); unmapped (no route: unknown symbol, other species, mouse gene without an ortholog in
the vocabulary).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Mapping

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization.bundled import load_resource
from lightning_langcell.tokenization.vocabulary import GeneVocabulary

ENSEMBL_ID = re.compile(r"^(ENS[A-Z]*\d+)(?:\.\d+)?(?:_PAR_Y)?$")
ID_COLUMNS = ("ensembl_id", "feature_id")
SYMBOL_COLUMNS = ("gene_symbol", "feature_name", "gene_name", "gene_symbols", "symbol")
SPECIES = ("auto", "human", "mouse")

# routes of a source gene
UNMAPPED, BY_ENSEMBL, BY_SYMBOL, BY_ORTHOLOG, OUTSIDE_VOCABULARY = range(5)


@dataclasses.dataclass(frozen=True)
class GeneMapping:
    """Where each source gene (column of X) goes.

    ``token_id``: int32 per source column, the vocabulary token id of the gene, -1 when the
    gene is not tokenised. ``route``: int8 per source column (the constants above).
    """

    token_id: np.ndarray
    route: np.ndarray
    species: str
    id_source: str
    unmapped_examples: tuple[str, ...]

    @functools.cached_property
    def n_merged(self) -> int:
        """Source genes whose counts are summed into a vocabulary gene reached by another."""
        mapped = self.token_id[self.token_id >= 0]
        return int(mapped.size - np.unique(mapped).size)

    @property
    def n_tokenised(self) -> int:
        return int(np.count_nonzero(self.token_id >= 0))

    def counts(self) -> dict[str, int]:
        route_counts = np.bincount(self.route, minlength=5)
        return {
            "genes_total": int(self.route.size),
            "genes_mapped_by_ensembl": int(route_counts[BY_ENSEMBL]),
            "genes_mapped_by_symbol": int(route_counts[BY_SYMBOL]),
            "genes_mapped_by_ortholog": int(route_counts[BY_ORTHOLOG]),
            "genes_unmapped": int(route_counts[UNMAPPED]),
            "genes_outside_vocabulary": int(route_counts[OUTSIDE_VOCABULARY]),
            "genes_summed_into_shared_token": self.n_merged,
        }


def strip_version(identifier: str) -> str:
    """``ENSG00000188290.12`` -> ``ENSG00000188290``; non-Ensembl strings unchanged."""
    match = ENSEMBL_ID.match(identifier)
    return match.group(1) if match else identifier


def clean_strings(values: object) -> np.ndarray:
    """Identifiers as stripped Python strings (object array); missing values -> ''."""
    series = pd.Series(np.asarray(values, dtype=object))
    return series.where(series.notna(), "").astype(str).str.strip().to_numpy(dtype=object)


@functools.lru_cache(maxsize=1)
def _symbol_maps() -> tuple[pd.Series, pd.Series, pd.Series]:
    """(human symbol -> ENSG, mouse symbol -> human ENSG, mouse ENSMUSG -> human ENSG) as Series."""
    human = {**load_resource("human_symbol_extra.json.gz"), **load_resource("gene_name_id_dict.json.gz")}
    mouse = load_resource("mouse_to_human.json.gz")
    return tuple(pd.Series(m, dtype=object) for m in (human, mouse["symbol"], mouse["ensembl"]))


def gene_identifiers(var: pd.DataFrame) -> tuple[np.ndarray, str]:
    """(identifier per gene, description of where they came from) with blanks filled by symbols."""
    names = clean_strings(var.index)
    for column in ID_COLUMNS:
        if column in var.columns:
            ids = clean_strings(var[column])
            blank = ids == ""
            ids[blank] = names[blank]
            source = f"var[{column!r}]" + (" (blank ids -> var_names)" if blank.any() else "")
            return ids, source
    symbols = next((clean_strings(var[c]) for c in SYMBOL_COLUMNS if c in var.columns), None)
    if symbols is not None:
        blank = names == ""
        names[blank] = symbols[blank]
    return names, "var_names"


def _count_known(ids: pd.Series, known: pd.Index) -> int:
    """How many ``ids`` are in ``known`` (the index's hash table is built once per process)."""
    return int(np.count_nonzero(known.get_indexer(ids) >= 0))


def detect_species(identifiers: np.ndarray, human_ids: pd.Index | None = None) -> str:
    """'mouse' when mouse Ensembl ids + mouse symbols outnumber human ones, else 'human'.

    ``human_ids``: optional index of known human Ensembl ids (e.g. the vocabulary's); exact
    members are counted as human without the string checks (same answer, faster).
    """
    human_symbols, mouse_symbols, _ = _symbol_maps()
    identifiers = np.asarray(identifiers, dtype=object)
    human = 0
    if human_ids is not None:
        known = human_ids.get_indexer(identifiers) >= 0
        human, identifiers = int(known.sum()), identifiers[~known]
    ids = pd.Series(identifiers, dtype=object)
    human += ids.str.startswith("ENSG").sum() + _count_known(ids, human_symbols.index)
    mouse = ids.str.startswith("ENSMUSG").sum() + _count_known(ids, mouse_symbols.index)
    return "mouse" if mouse > human else "human"


def resolve_genes(var: pd.DataFrame, vocabulary: GeneVocabulary, species: str = "auto") -> GeneMapping:
    """Map every gene of ``var`` (index = var_names) into ``vocabulary``; see the module doc."""
    if species not in SPECIES:
        raise LangCellInputError(f"species must be one of {SPECIES}, got {species!r}.", "Use species='auto'.")
    identifiers, id_source = gene_identifiers(var)
    lookup = token_lookup(vocabulary)
    if species == "auto":
        species = detect_species(identifiers, lookup.index)
    route, token_id, unmapped = resolve_identifiers(identifiers, lookup, species)
    return GeneMapping(token_id, route, species, id_source, tuple(unmapped[:5]))


@functools.lru_cache(maxsize=4)
def token_lookup(vocabulary: GeneVocabulary) -> pd.Series:
    """Ensembl id -> token id (int64) of an immutable vocabulary, built once per vocabulary."""
    return pd.Series(vocabulary.gene_token_ids.astype(np.int64), index=pd.Index(vocabulary.gene_ids))


def resolve_identifiers(identifiers: np.ndarray, gene_token_id: Mapping[str, int] | pd.Series,
                        species: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(route int8, token id int32 or -1, unmapped identifiers) per identifier; ``gene_token_id``:
    Ensembl id -> token id, as a mapping or an int Series indexed by Ensembl id.

    Identifiers that are exactly a vocabulary id (the usual case) are looked up directly; only
    the others go through the version stripping and the symbol / ortholog maps.
    """
    lookup = gene_token_id if isinstance(gene_token_id, pd.Series) else pd.Series(dict(gene_token_id),
                                                                                  dtype=np.int64)
    identifiers = np.asarray(identifiers, dtype=object)
    exact = lookup.index.get_indexer(identifiers) if lookup.index.is_unique else np.full(len(identifiers), -1)
    route = np.full(len(identifiers), BY_ENSEMBL, dtype=np.int8)
    token_id = np.full(len(identifiers), -1, dtype=np.int32)
    hit = exact >= 0
    token_id[hit] = lookup.to_numpy()[exact[hit]]
    rest = np.flatnonzero(~hit)
    if rest.size == 0:
        return route, token_id, []
    route[rest], token_id[rest], unmapped = _resolve_by_maps(identifiers[rest], lookup, species)
    return route, token_id, unmapped


def _resolve_by_maps(identifiers: np.ndarray, lookup: pd.Series, species: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``resolve_identifiers`` for identifiers that are not exactly a vocabulary id."""
    human_symbols, mouse_symbols, mouse_ensembl = _symbol_maps()
    ids = pd.Series(identifiers, dtype=object)
    stable = ids.str.extract(ENSEMBL_ID, expand=False)
    is_mouse_id = stable.str.startswith("ENSMUSG", na=False).to_numpy()
    is_human_id = stable.str.startswith("ENSG", na=False).to_numpy()
    is_symbol = stable.isna().to_numpy()
    target = pd.Series(np.full(len(ids), None, dtype=object))
    target[is_human_id] = stable[is_human_id]
    target[is_mouse_id] = stable[is_mouse_id].map(mouse_ensembl)
    target[is_symbol] = ids[is_symbol].map(mouse_symbols if species == "mouse" else human_symbols)
    hit = np.where(is_mouse_id | (is_symbol & (species == "mouse")), BY_ORTHOLOG, np.where(is_symbol, BY_SYMBOL, BY_ENSEMBL))
    found = target.notna().to_numpy()
    position = target.map(lookup).to_numpy(dtype=np.float64)
    in_vocabulary = ~np.isnan(position)
    route = np.where(in_vocabulary, hit, np.where(found, OUTSIDE_VOCABULARY, UNMAPPED)).astype(np.int8)
    position = np.where(in_vocabulary, position, -1).astype(np.int32)
    return route, position, [str(x) for x in ids[~found].head(5)]
