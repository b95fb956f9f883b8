"""Candidate classes of zero-shot annotation: names, class texts, and ground-truth matching.

Classes come from the labels of an obs column, a list of labels or Cell Ontology ids, or a
``type2text`` mapping (JSON file or dict: label or id → definition, as the official
``type2text.json``). Each class text is ``"cell type: <label>. <definition>; "``
(:meth:`CellTextBuilder.class_text`). A class whose definition cannot be found is an error
unless ``allow_missing_definitions=True`` (its text is then ``"cell type: <label>; "``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError, shorten
from lightning_langcell.inference.class_sets import CLASS_SET_HELP, class_presets, class_set_ids, is_class_set
from lightning_langcell.text import CellTextBuilder, Ontology, normalize_label, normalize_term_id
from lightning_langcell.text.ontology import is_term_id

ClassSpec = Sequence[str] | Mapping[str, str] | str | os.PathLike | None


@dataclass(frozen=True)
class CandidateClasses:
    """``names`` (what predictions read), ``texts`` (class texts), ``term_ids`` (ontology id or None);
    ``labels`` / ``definitions``: the label and definition each text was written from (None when
    unknown: prompt templates other than the official text then have nothing to write from)."""

    names: list[str]
    texts: list[str]
    term_ids: list[str | None]
    labels: list[str] | None = None
    definitions: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.names)


def _label_id_column(obs: pd.DataFrame, label_column: str) -> str | None:
    column = f"{label_column}_ontology_term_id"
    return column if column in obs.columns else None


def obs_labels(obs: pd.DataFrame, label_column: str) -> pd.Series:
    """The label column as strings, missing values (NaN, "", "unknown", "nan") as <NA>."""
    if label_column not in obs.columns:
        raise LangCellInputError(
            f"Label column {label_column!r} is not in obs (columns: {list(obs.columns)}).",
            "Pass label_column=<your label column>, or the candidate classes explicitly (classes=[...]).",
        )
    values = obs[label_column].astype("string").str.strip()
    return values.mask(values.str.lower().isin(["", "unknown", "nan", "na", "none"]))


def _classes_from_obs(obs: pd.DataFrame, label_column: str) -> tuple[list[str], list[str]]:
    """(names, keys): sorted distinct labels; key = the label's most frequent ontology id if any."""
    labels = obs_labels(obs, label_column)
    names = sorted(labels.dropna().unique().tolist())
    if not names:
        raise LangCellInputError(f"obs[{label_column!r}] holds no label.",
                                 "Pass the candidate classes explicitly (classes=[...]).")
    id_column = _label_id_column(obs, label_column)
    if id_column is None:
        return names, names
    pairs = pd.DataFrame({"label": labels, "id": obs[id_column].astype("string")}).dropna()
    keys = []
    for name in names:
        ids = [normalize_term_id(v) for v in pairs.loc[pairs["label"] == name, "id"]]
        ids = [i for i in ids if i]
        keys.append(Counter(ids).most_common(1)[0][0] if ids else name)
    return names, keys


def _read_mapping(source: Mapping[str, str] | str | os.PathLike) -> dict[str, str]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise LangCellInputError(f"type2text file {path} does not exist.",
                                 "Pass a JSON file mapping class label or CL id → definition.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LangCellInputError(f"{path} is not valid JSON ({error}).",
                                 "Write it as {\"B cell\": \"A lymphocyte of B lineage ...\", ...}.") from error
    if not isinstance(data, dict):
        raise LangCellInputError(f"{path} holds a {type(data).__name__}, not a mapping.",
                                 "Write it as {\"<label or CL id>\": \"<definition>\", ...}.")
    return data


def _is_mapping_source(classes: Any) -> bool:
    return isinstance(classes, Mapping) or (
        isinstance(classes, (str, os.PathLike)) and str(classes).endswith(".json"))


def candidate_classes(
    classes: ClassSpec = None,
    obs: pd.DataFrame | None = None,
    label_column: str | None = "cell_type",
    type2text: Mapping[str, str] | str | os.PathLike | None = None,
    allow_missing_definitions: bool = False,
    ontology: Ontology | None = None,
) -> CandidateClasses:
    """Resolve candidate classes and build their texts.

    Args:
        classes: None (the distinct labels of ``obs[label_column]``, texts from their ontology
            ids in ``obs[f"{label_column}_ontology_term_id"]`` when present); a list of labels or
            CL ids; a type2text mapping / JSON path whose keys are the classes; a class set
            (``"CL:all"``, ``"CL:0000988+"``, ``"preset:blood"``; also as list items; see
            :mod:`lightning_langcell.inference.class_sets`), its classes named by their labels; or
            an already resolved :class:`CandidateClasses` (returned as is).
        type2text: definitions overriding the ontology (label or id → definition).
        allow_missing_definitions: accept classes with no definition (text ``"cell type: X; "``).
    """
    if isinstance(classes, CandidateClasses):
        return classes
    overrides = dict(_read_mapping(type2text)) if type2text is not None else {}
    ontology = ontology if ontology is not None else Ontology.bundled()
    if classes is None:
        if obs is None or label_column is None:
            raise LangCellInputError("No candidate classes.",
                                     "Pass classes=[...] or a label_column present in obs.")
        names, keys = _classes_from_obs(obs, label_column)
    elif _is_mapping_source(classes):
        mapping = _read_mapping(classes)
        overrides = {**mapping, **overrides}
        names = keys = [str(name) for name in mapping]
    elif isinstance(classes, str) and is_class_set(classes):
        names, keys = _expand_class_sets([classes], ontology)
    elif isinstance(classes, (str, os.PathLike)):
        raise LangCellInputError(f"classes={classes!r} is a single string.",
                                 "Pass a list of labels / CL ids, a type2text .json file, or a class set: "
                                 + CLASS_SET_HELP.format(names=sorted(class_presets())))
    else:
        names, keys = _expand_class_sets([str(name).strip() for name in classes], ontology)
    if not names:
        raise LangCellInputError("The list of candidate classes is empty.", "Give at least one class.")
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise LangCellInputError(f"Candidate classes appear more than once: {duplicated}.", "List each class once.")
    builder = CellTextBuilder(type2text=overrides or None, ontology=ontology)
    texts, missing, parts = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, key in zip(names, keys):
            before = set(builder.missing_definitions.get("cell type", []))
            texts.append(builder.class_text(key))
            parts.append(builder.class_parts(key)[:2])
            if set(builder.missing_definitions.get("cell type", [])) - before:
                missing.append(name)
    if missing and not allow_missing_definitions:
        raise LangCellInputError(
            f"{len(missing)} class(es) have no text: no type2text entry and no Cell Ontology match: {missing}.",
            "Give their definitions with type2text={'<class>': '<definition>'} (or a JSON file), use CL ids "
            "(e.g. 'CL:0000236'), or pass allow_missing_definitions=True to score them as 'cell type: <class>; '.",
        )
    if missing:
        warnings.warn(f"Classes without definition, scored as 'cell type: <class>; ': {[shorten(name) for name in missing]}.",
                      stacklevel=2)
    _warn_identical_texts(names, texts)
    term_ids = [_term_id(key, ontology) for key in keys]
    return CandidateClasses(list(names), texts, term_ids, [label for label, _ in parts],
                            [definition for _, definition in parts])


def _expand_class_sets(items: Sequence[str], ontology: Ontology) -> tuple[list[str], list[str]]:
    """(names, keys) of a class list whose items may be class sets (:mod:`.class_sets`): a set's
    terms are named by their labels and keyed by their ids (each term once); other items stay."""
    names, keys, expanded = [], [], set()
    for item in items:
        if not is_class_set(item):
            names.append(item)
            keys.append(item)
            continue
        for term_id in class_set_ids(item, ontology):
            if term_id not in expanded:
                expanded.add(term_id)
                names.append(ontology.term(term_id).label)
                keys.append(term_id)
    return names, keys


def _warn_identical_texts(names: Sequence[str], texts: Sequence[str]) -> None:
    groups: dict[str, list[str]] = {}
    for name, text in zip(names, texts):
        groups.setdefault(text, []).append(name)
    same = [group for group in groups.values() if len(group) > 1]
    if same:
        same = [[shorten(name) for name in group] for group in same]
        warnings.warn(f"Classes with identical texts get identical scores (the first wins ties): {same}.",
                      stacklevel=3)


def _term_id(label_or_id: str | None, ontology: Ontology) -> str | None:
    if label_or_id is None:
        return None
    if is_term_id(label_or_id):
        return normalize_term_id(label_or_id)
    return ontology.match_label(label_or_id, "CL")


def truth_indices(labels: Sequence[Any] | pd.Series, classes: CandidateClasses,
                  ontology: Ontology | None = None) -> np.ndarray:
    """Class index of each ground-truth label (int64, -1 when missing or not a candidate).

    A label matches a class by name, then case/hyphen-insensitively, then by ontology id.
    """
    values = pd.Series(labels, dtype="string")
    by_name = {name: i for i, name in enumerate(classes.names)}
    by_key = {normalize_label(name): i for i, name in enumerate(classes.names)}
    by_id = {term: i for i, term in enumerate(classes.term_ids) if term}
    lookup: dict[str, int] = {}
    for value in values.dropna().unique():
        if value in by_name:
            lookup[value] = by_name[value]
        elif normalize_label(value) in by_key:
            lookup[value] = by_key[normalize_label(value)]
        else:
            ontology = ontology if ontology is not None else Ontology.bundled()
            lookup[value] = by_id.get(_term_id(str(value), ontology), -1)
    return np.array([lookup.get(v, -1) if v is not pd.NA else -1 for v in values], dtype=np.int64)
