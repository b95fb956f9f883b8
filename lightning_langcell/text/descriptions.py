"""Cell texts from ontology terms, in the official LangCell form.

One segment per aspect present, concatenated in the order cell type, tissue, disease,
development stage::

    "cell type: B cell. A lymphocyte of B lineage that is capable of B cell mediated immunity.; "
    "tissue: blood. A fluid that is composed of blood plasma and erythrocytes.; "

i.e. ``f"{aspect}: {label}. {definition}; "`` (the definition keeps its own final period).
An aspect whose label has no definition is written ``f"{aspect}: {label}; "`` and the label is
recorded in :attr:`CellTextBuilder.missing_definitions` (one warning per new label).
Development stages (HsapDv/MmusDv) are not bundled: they are always label only.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lightning_langcell.column_codes import combination_ids, first_occurrences, value_codes
from lightning_langcell.errors import LangCellInputError, shorten
from lightning_langcell.text.ontology import (Ontology, OntologyTerm, is_term_id, normalize_label,
                                              normalize_term_id)


@dataclass(frozen=True)
class TextAspect:
    """One part of a cell text: its name in the text, its CELLxGENE obs columns, its ontology."""

    name: str
    label_column: str
    id_column: str
    ontology: str | None  # prefix searched when matching free-text labels; None: label only


ASPECTS: tuple[TextAspect, ...] = (
    TextAspect("cell type", "cell_type", "cell_type_ontology_term_id", "CL"),
    TextAspect("tissue", "tissue", "tissue_ontology_term_id", "UBERON"),
    TextAspect("disease", "disease", "disease_ontology_term_id", "MONDO"),
    TextAspect("development stage", "development_stage", "development_stage_ontology_term_id", None),
)
ASPECT_NAMES = tuple(aspect.name for aspect in ASPECTS)
_ABSENT = {"", "unknown", "na", "n/a", "nan", "none", "null"}


def text_segment(aspect: str, label: str, definition: str | None) -> str:
    """``"cell type: B cell. <definition>; "``, or ``"cell type: B cell; "`` without definition."""
    if definition:
        return f"{aspect}: {label}. {definition}; "
    return f"{aspect}: {label}; "


def _present(value: object) -> str | None:
    """The stripped string, or None for missing values (NaN, None, "", "unknown", "NA")."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return None if text.lower() in _ABSENT else text


class CellTextBuilder:
    """Builds the text of each cell from its annotations (obs columns).

    Args:
        type2text: overrides, as a dict or a JSON file path, mapping a label or an ontology id
            to the **definition** (the part after ``"<label>. "``), as the official
            ``type2text.json`` does. Looked up by id, then label (case/hyphen-insensitive),
            for every aspect; an override wins over the ontology. The label written in the
            text stays the ontology label when the term is known, else the given label.
        ontology: term source; default :meth:`Ontology.bundled`.
        aspects: which aspects to write, a subset of ``ASPECT_NAMES`` (order is fixed).
        columns: obs column names that differ from CELLxGENE's, e.g.
            ``{"cell_type": "bulk_labels"}`` (standard name → your column).

    Per aspect: a present ontology id column wins (the term's label and definition); else the
    free-text label is matched to the ontology (:meth:`Ontology.match_label`); an id or label
    that is absent, ``"unknown"`` or ``"NA"`` drops the aspect from the text.
    """

    def __init__(self, type2text: Mapping[str, str] | str | os.PathLike | None = None,
                 ontology: Ontology | None = None,
                 aspects: Sequence[str] = ASPECT_NAMES,
                 columns: Mapping[str, str] | None = None):
        unknown = set(aspects) - set(ASPECT_NAMES)
        if unknown or not aspects:
            raise LangCellInputError(f"Unknown or no text aspects {sorted(unknown)}.",
                                     f"Choose among {list(ASPECT_NAMES)}.")
        self.ontology = ontology if ontology is not None else Ontology.bundled()
        self.aspects = tuple(aspect for aspect in ASPECTS if aspect.name in aspects)
        self.columns = dict(columns or {})
        self._overrides_by_id, self._overrides_by_label = _read_type2text(type2text)
        self._segments: dict[tuple[str, str | None, str | None], str | None] = {}
        self._missing: dict[str, set[str]] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- public API -----------------------------------------------------------------------
    @property
    def missing_definitions(self) -> dict[str, list[str]]:
        """Aspect → sorted labels written without a definition so far."""
        return {aspect: sorted(labels) for aspect, labels in self._missing.items()}

    def class_text(self, label_or_id: str) -> str:
        """Zero-shot class text ``"cell type: <label>. <definition>; "`` for a label or CL id."""
        aspect = ASPECTS[0]
        term_id = label_or_id if is_term_id(label_or_id) else None
        segment = self._segment(aspect, None if term_id else label_or_id, term_id)
        if segment is None:
            raise LangCellInputError(f"No class text for {label_or_id!r}.",
                                     "Give a cell type label or a CL id (e.g. 'CL:0000236').")
        self._warn_missing()
        return segment

    def class_parts(self, label_or_id: str) -> tuple[str, str | None, OntologyTerm | None]:
        """(label shown, definition or None, ontology term or None) of a class, as
        :meth:`class_text` writes it (overrides applied); records nothing as missing."""
        term_id = label_or_id if is_term_id(label_or_id) else None
        return self._resolve(ASPECTS[0], None if term_id else _present(label_or_id), _present(term_id))

    def cell_text(self, row: Mapping) -> str:
        """Text of one cell from a mapping of obs column → value (all aspects present)."""
        text = "".join(self._row_segments(row))
        self._warn_missing()
        return text

    def texts_for(self, obs: pd.DataFrame) -> list[str]:
        """One text per row of ``obs`` (each distinct annotation combination built once)."""
        texts, ids = self.text_ids_for(obs)
        return [texts[i] for i in ids]

    def text_ids_for(self, obs: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """Distinct texts (in order of first appearance) and, per row, the index of its text.

        Returns ``(texts_unique, ids)`` with ``ids`` int32 of shape ``[len(obs)]``; cells
        with identical text share one id (positives for the contrastive losses). Work per cell
        is numpy over column codes (no sort of the cells); texts are built per distinct
        combination of annotation values.
        """
        columns = self._present_columns(obs)
        codes, uniques = zip(*(value_codes(obs[column]) for column in columns))
        combination, count = combination_ids(codes, [len(values) for values in uniques])
        first_rows = first_occurrences(combination, count)
        text_index: dict[str, int] = {}
        combination_to_text = np.empty(count, dtype=np.int32)
        for combination_id in np.argsort(first_rows, kind="stable"):
            first = first_rows[combination_id]
            row = {column: uniques[j][codes[j][first]] if codes[j][first] >= 0 else None
                   for j, column in enumerate(columns)}
            text = "".join(self._row_segments(row))
            combination_to_text[combination_id] = text_index.setdefault(text, len(text_index))
        self._warn_missing()
        return list(text_index), combination_to_text[combination]

    # -- internals ------------------------------------------------------------------------
    def _column(self, name: str) -> str:
        return self.columns.get(name, name)

    def _present_columns(self, obs: pd.DataFrame) -> list[str]:
        wanted = [self._column(name) for aspect in self.aspects
                  for name in (aspect.label_column, aspect.id_column)]
        present = [column for column in wanted if column in obs.columns]
        if not present:
            raise LangCellInputError(
                f"obs has none of the annotation columns {wanted}.",
                "Rename your label column (e.g. to 'cell_type') or pass "
                "columns={'cell_type': '<your column>'}.")
        return present

    def _row_segments(self, row: Mapping) -> list[str]:
        segments = []
        for aspect in self.aspects:
            label = row.get(self._column(aspect.label_column))
            term_id = row.get(self._column(aspect.id_column))
            segment = self._segment(aspect, label, term_id)
            if segment is not None:
                segments.append(segment)
        return segments

    def _segment(self, aspect: TextAspect, label: object, term_id: object) -> str | None:
        label, term_id = _present(label), _present(term_id)
        key = (aspect.name, label, term_id)
        if key not in self._segments:
            self._segments[key] = self._build_segment(aspect, label, term_id)
        return self._segments[key]

    def _build_segment(self, aspect: TextAspect, label: str | None,
                       term_id: str | None) -> str | None:
        if label is None and term_id is None:
            return None
        shown, definition, _ = self._resolve(aspect, label, term_id)
        if not definition:
            self._missing.setdefault(aspect.name, set()).add(shown)
        return text_segment(aspect.name, shown, definition)

    def _resolve(self, aspect: TextAspect, label: str | None,
                 term_id: str | None) -> tuple[str, str | None, OntologyTerm | None]:
        normalized_id = normalize_term_id(term_id) if term_id else None
        if term_id is not None:  # the id column wins, even when the term is not bundled
            term = self.ontology.term(normalized_id) if normalized_id else None
        elif aspect.ontology is not None:
            matched = self.ontology.match_label(label, aspect.ontology)
            term = self.ontology.term(matched) if matched else None
        else:
            term = None
        shown = term.label if term is not None else (label or term_id)
        definition = self._override(normalized_id, term, label)
        if definition is None and term is not None:
            definition = term.definition
        return shown, definition or None, term

    def _override(self, term_id: str | None, term: OntologyTerm | None,
                  label: str | None) -> str | None:
        for candidate in (term_id, term.id if term is not None else None):
            if candidate and candidate in self._overrides_by_id:
                return self._overrides_by_id[candidate]
        for candidate in (label, term.label if term is not None else None):
            if candidate and normalize_label(candidate) in self._overrides_by_label:
                return self._overrides_by_label[normalize_label(candidate)]
        return None

    def _warn_missing(self) -> None:
        new = sorted({(aspect, label) for aspect, labels in self._missing.items()
                      for label in labels} - self._warned)
        if not new:
            return
        self._warned.update(new)
        shown = ", ".join(f"{aspect}: {shorten(label)!r}" for aspect, label in new[:10])
        more = f" and {len(new) - 10} more" if len(new) > 10 else ""
        warnings.warn(
            f"{len(new)} label(s) have no definition and are written as '<aspect>: <label>; ' "
            f"({shown}{more}). See CellTextBuilder.missing_definitions; add ontology ids or "
            "a type2text mapping to give them definitions.", stacklevel=3)


def _read_type2text(type2text) -> tuple[dict[str, str], dict[str, str]]:
    """Split overrides into {normalised id: definition} and {normalised label: definition}."""
    if type2text is None:
        return {}, {}
    if isinstance(type2text, (str, os.PathLike)):
        path = Path(type2text)
        if not path.is_file():
            raise LangCellInputError(f"type2text file {path} does not exist.",
                                     "Pass a JSON file mapping label or id → definition.")
        with open(path, encoding="utf-8") as handle:
            type2text = json.load(handle)
    if not isinstance(type2text, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in type2text.items()):
        raise LangCellInputError("type2text must map strings (label or id) to strings.",
                                 'Use e.g. {"B cell": "A lymphocyte of B lineage ..."}.')
    by_id, by_label = {}, {}
    for key, definition in type2text.items():
        if any(definition.lstrip().startswith(f"{name}:") for name in ASPECT_NAMES):
            raise LangCellInputError(
                f"type2text[{key!r}] is a full text; values are definitions only.",
                "Drop the leading '<aspect>: <label>. ' and the trailing '; '.")
        if is_term_id(key):
            by_id[normalize_term_id(key)] = definition.strip()
        else:
            by_label[normalize_label(key)] = definition.strip()
    return by_id, by_label
