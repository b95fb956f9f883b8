"""The gene vocabulary: Geneformer-30M token ids plus LangCell's ``<cls>``, and gene medians.

Ids: ``<pad>`` = 0, ``<mask>`` = 1, genes 2..25425 (Ensembl ids), ``<cls>`` = 25426 (added
here, as LangCell does) -> 25,427 tokens. Never mix with Geneformer's later 20,275-token
dictionaries: the ids differ silently.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization.bundled import canonical_sha256, load_json_mapping, load_resource

PAD_TOKEN, MASK_TOKEN, CLS_TOKEN = "<pad>", "<mask>", "<cls>"
PAD_ID, MASK_ID, CLS_ID = 0, 1, 25426
SPECIAL_TOKENS = (PAD_TOKEN, MASK_TOKEN, CLS_TOKEN)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class GeneVocabulary:
    """Immutable token dictionary and gene-median dictionary.

    ``token_to_id``: read-only Mapping token -> id (specials included). ``gene_median``:
    read-only Mapping Ensembl id -> non-zero median (float64) of the genes that are
    tokenised. Aligned read-only arrays over those genes, in ``gene_median`` order:
    ``gene_ids`` (str), ``gene_token_ids`` (int32), ``gene_medians`` (float64); and
    ``median_by_token`` (float64 [len(vocabulary)], NaN for tokens without a median).
    """

    __slots__ = (
        "_token_to_id", "_gene_median", "_id_to_token", "_gene_index", "_gene_token_id",
        "gene_ids", "gene_token_ids", "gene_medians", "median_by_token", "checksum", "median_checksum",
    )

    def __init__(self, token_to_id: Mapping[str, int], gene_median: Mapping[str, float]):
        tokens = _with_cls(dict(token_to_id))
        medians = _checked_medians(dict(gene_median), tokens)
        set_ = object.__setattr__
        set_(self, "_token_to_id", MappingProxyType(tokens))
        set_(self, "_gene_median", MappingProxyType(medians))
        id_to_token = [""] * len(tokens)
        for token, index in tokens.items():
            id_to_token[index] = token
        set_(self, "_id_to_token", tuple(id_to_token))
        set_(self, "_gene_index", MappingProxyType({gene: i for i, gene in enumerate(medians)}))
        set_(self, "gene_ids", _read_only(np.array(list(medians), dtype=object)))
        set_(self, "gene_token_ids", _read_only(np.array([tokens[g] for g in medians], dtype=np.int32)))
        set_(self, "gene_medians", _read_only(np.array(list(medians.values()), dtype=np.float64)))
        set_(self, "_gene_token_id", MappingProxyType({gene: tokens[gene] for gene in medians}))
        median_by_token = np.full(len(tokens), np.nan)
        median_by_token[self.gene_token_ids] = self.gene_medians
        set_(self, "median_by_token", _read_only(median_by_token))
        set_(self, "checksum", canonical_sha256(tokens))
        set_(self, "median_checksum", canonical_sha256(medians))

    # ------------------------------------------------------------------ construction
    @classmethod
    def bundled(cls) -> "GeneVocabulary":
        """The Geneformer-30M dictionaries shipped with the package (built once per process)."""
        return _bundled_vocabulary()

    @classmethod
    def from_sources(cls, token_dictionary: Any = None, gene_median: Any = None) -> "GeneVocabulary":
        """From dicts or JSON paths; a ``None`` part comes from the bundled dictionaries.

        With a custom ``gene_median`` and the bundled token dictionary, every median gene must
        have a token. With a custom ``token_dictionary`` and bundled medians, the medians are
        restricted to the genes of that dictionary.
        """
        if token_dictionary is None and gene_median is None:
            return cls.bundled()
        if all(source is None or isinstance(source, (str, os.PathLike)) for source in (token_dictionary, gene_median)):
            return _vocabulary_from_files(_file_key(token_dictionary), _file_key(gene_median))
        return _build_vocabulary(token_dictionary, gene_median)

    # ------------------------------------------------------------------ read-only API
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("GeneVocabulary is immutable.")

    def __len__(self) -> int:
        return len(self._token_to_id)

    def __contains__(self, token: object) -> bool:
        return token in self._token_to_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneVocabulary):
            return NotImplemented
        return self.checksum == other.checksum and self.median_checksum == other.median_checksum

    def __hash__(self) -> int:
        return hash((self.checksum, self.median_checksum))

    def __repr__(self) -> str:
        return f"GeneVocabulary({len(self)} tokens, {len(self._gene_median)} genes, checksum={self.checksum[:12]})"

    @property
    def token_to_id(self) -> Mapping[str, int]:
        return self._token_to_id

    @property
    def id_to_token(self) -> tuple[str, ...]:
        return self._id_to_token

    @property
    def gene_median(self) -> Mapping[str, float]:
        return self._gene_median

    @property
    def gene_index(self) -> Mapping[str, int]:
        """Ensembl id -> position in ``gene_ids`` / ``gene_token_ids`` / ``gene_medians``."""
        return self._gene_index

    @property
    def gene_token_id(self) -> Mapping[str, int]:
        """Ensembl id -> token id, for the genes that are tokenised (those with a median)."""
        return self._gene_token_id

    @property
    def pad_id(self) -> int:
        return self._token_to_id[PAD_TOKEN]

    @property
    def mask_id(self) -> int:
        return self._token_to_id[MASK_TOKEN]

    @property
    def cls_id(self) -> int:
        return self._token_to_id[CLS_TOKEN]


def _file_key(path: Any) -> tuple | None:
    """(resolved path, mtime, size): a cache key that changes when the file does."""
    if path is None:
        return None
    stat = Path(path).stat() if Path(path).is_file() else None
    return (str(Path(path).resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else -1)


@functools.lru_cache(maxsize=8)
def _vocabulary_from_files(token_key: tuple | None, median_key: tuple | None) -> GeneVocabulary:
    """Vocabulary from JSON files, built once per file version."""
    return _build_vocabulary(*(None if key is None else key[0] for key in (token_key, median_key)))


def _build_vocabulary(token_dictionary: Any, gene_median: Any) -> GeneVocabulary:
    tokens = (
        load_json_mapping(token_dictionary, "token_dictionary")
        if token_dictionary is not None
        else dict(load_resource("token_dictionary.json.gz"))
    )
    if gene_median is not None:
        medians = load_json_mapping(gene_median, "gene_median")
    else:
        medians = {g: m for g, m in load_resource("gene_median_dictionary.json.gz").items() if g in tokens}
    return GeneVocabulary(tokens, medians)


@functools.lru_cache(maxsize=1)
def _bundled_vocabulary() -> GeneVocabulary:
    vocabulary = GeneVocabulary(load_resource("token_dictionary.json.gz"), load_resource("gene_median_dictionary.json.gz"))
    if (len(vocabulary), vocabulary.cls_id, vocabulary.pad_id, vocabulary.mask_id) != (25427, CLS_ID, PAD_ID, MASK_ID):
        raise AssertionError("bundled vocabulary has unexpected special ids")
    return vocabulary


def _with_cls(tokens: dict) -> dict:
    """Check ids (``<pad>``=0, ``<mask>``=1, ids 0..n-1 unique ints) and append ``<cls>``."""
    fix = "Use a Geneformer-style token dictionary: {'<pad>': 0, '<mask>': 1, '<ENSG...>': 2, ...}."
    if tokens.get(PAD_TOKEN) != 0 or tokens.get(MASK_TOKEN) != 1:
        raise LangCellInputError("The token dictionary must map '<pad>' to 0 and '<mask>' to 1.", fix)
    try:
        tokens = {str(token): int(index) for token, index in tokens.items()}
    except (TypeError, ValueError) as error:
        raise LangCellInputError(f"The token dictionary has a non-integer id ({error}).", fix) from error
    if CLS_TOKEN not in tokens:
        tokens[CLS_TOKEN] = len(tokens)
    if sorted(tokens.values()) != list(range(len(tokens))):
        raise LangCellInputError("The token dictionary ids are not unique and contiguous from 0.", fix)
    return tokens


def _checked_medians(medians: dict, tokens: dict) -> dict:
    """Medians as float64; each gene must have a token; each median finite and > 0."""
    fix = "Pass gene medians computed with `compute_gene_medians` over the same vocabulary."
    missing = [gene for gene in medians if gene not in tokens or gene in SPECIAL_TOKENS]
    if missing:
        raise LangCellInputError(
            f"{len(missing)} gene(s) of the gene-median dictionary have no token (e.g. {missing[:3]}).", fix
        )
    try:
        medians = {str(gene): float(value) for gene, value in medians.items()}
    except (TypeError, ValueError) as error:
        raise LangCellInputError(f"The gene-median dictionary has a non-numeric median ({error}).", fix) from error
    bad = [gene for gene, value in medians.items() if not (math.isfinite(value) and value > 0)]
    if bad:
        raise LangCellInputError(f"Gene medians must be finite and > 0; {len(bad)} are not (e.g. {bad[:3]}).", fix)
    if not medians:
        raise LangCellInputError("The gene-median dictionary is empty.", fix)
    return medians
