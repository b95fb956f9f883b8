"""Ontology terms (label, definition, synonyms) for cell texts: CL, UBERON and MONDO.

The bundled subset lives in ``resources/ontology_<PREFIX>.json.gz``, one columnar JSON file
per ontology written by ``scripts/build_ontology_subset.py``::

    {"ontology": "CL", "version": "2026-03-26", "source": "...",
     "id": [...], "label": [...], "definition": [str | null, ...], "synonyms": [[...], ...],
     "parents": [[...], ...] (CL only), "replaced_by": {deprecated_id: current_id}}

Each ontology is read on first use only (CL ~0.2 MB, UBERON ~0.6 MB, MONDO ~1.3 MB gzip).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Iterable, Mapping


RESOURCE_PACKAGE = "lightning_langcell.text"
BUNDLED_ONTOLOGIES = ("CL", "UBERON", "MONDO")

_ID_PATTERN = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)[:_](\d+)")
_BARE_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9]*[:_]\d+")
_SEPARATORS = re.compile(r"[\s\-_]+")


@dataclass(frozen=True)
class OntologyTerm:
    """One ontology class; ``definition`` is None when the ontology gives none; ``parents``:
    ids of its direct parents (empty for a root, and for ontologies bundled without hierarchy)."""

    id: str
    label: str
    definition: str | None = None
    synonyms: tuple[str, ...] = field(default_factory=tuple)
    parents: tuple[str, ...] = field(default_factory=tuple)


def normalize_term_id(value: object) -> str | None:
    """``"CL_0000236"``, ``" CL:0000236 (organoid)"`` → ``"CL:0000236"``; None if not an id."""
    if not isinstance(value, str):
        return None
    match = _ID_PATTERN.match(value)
    return f"{match.group(1).upper()}:{match.group(2)}" if match else None


def is_term_id(text: object) -> bool:
    """True for a bare ontology id such as ``"CL:0000236"`` or ``"CL_0000236"``."""
    return isinstance(text, str) and _BARE_ID_PATTERN.fullmatch(text.strip()) is not None


def normalize_label(text: str) -> str:
    """Matching key: lower case, hyphens/underscores/whitespace runs → one space."""
    return _SEPARATORS.sub(" ", text.lower()).strip()


def _singular(key: str) -> str | None:
    """Conservative plural → singular on the last word ("b cells" → "b cell"), else None."""
    head, _, last = key.rpartition(" ")
    if len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return f"{head} {last[:-1]}".strip()
    return None


class _LabelIndex:
    """Normalised label → ids and synonym → ids, for one ontology."""

    def __init__(self, terms: Iterable[OntologyTerm]):
        self.labels: dict[str, set[str]] = {}
        self.synonyms: dict[str, set[str]] = {}
        for term in terms:
            self.labels.setdefault(normalize_label(term.label), set()).add(term.id)
            for synonym in term.synonyms:
                self.synonyms.setdefault(normalize_label(synonym), set()).add(term.id)


class Ontology:
    """Term look-up by id and by label/synonym over one or more ontologies.

    ``terms`` maps an ontology prefix (``"CL"``) to its terms, either directly or through a
    zero-argument loader called on first use. ``replaced_by`` maps deprecated ids to their
    replacements (followed by :meth:`term`).
    """

    def __init__(self, terms: Mapping[str, Iterable[OntologyTerm] | Callable[[], dict]],
                 replaced_by: Mapping[str, str] | None = None,
                 versions: Mapping[str, str] | None = None):
        self._sources = {prefix.upper(): source for prefix, source in terms.items()}
        self._terms: dict[str, dict[str, OntologyTerm]] = {}
        self._indexes: dict[str, _LabelIndex] = {}
        self._ancestors: dict[str, dict[str, int]] = {}
        self._children: dict[str, dict[str, list[str]]] = {}
        self._replaced_by = dict(replaced_by or {})
        self.versions: dict[str, str] = dict(versions or {})

    # -- construction ---------------------------------------------------------------------
    @classmethod
    @functools.lru_cache(maxsize=1)
    def bundled(cls) -> "Ontology":
        """The ontology subset shipped with the package (cached; files read lazily)."""
        return cls({prefix: functools.partial(cls._read_bundled, prefix)
                    for prefix in BUNDLED_ONTOLOGIES})

    @staticmethod
    def _read_bundled(prefix: str) -> dict:
        source = resources.files(RESOURCE_PACKAGE) / "resources" / f"ontology_{prefix}.json.gz"
        with source.open("rb") as handle:
            return json.loads(gzip.decompress(handle.read()))

    def _add_payload(self, payload: dict) -> dict[str, OntologyTerm]:
        prefix = payload["ontology"].upper()
        parents = payload.get("parents") or [()] * len(payload["id"])
        terms = {
            term_id: OntologyTerm(term_id, label, definition or None, tuple(synonyms), tuple(term_parents))
            for term_id, label, definition, synonyms, term_parents in zip(
                payload["id"], payload["label"], payload["definition"], payload["synonyms"], parents)
        }
        self._terms[prefix] = terms
        self._sources[prefix] = terms.values()
        self._replaced_by.update(payload.get("replaced_by", {}))
        if payload.get("version"):
            self.versions[prefix] = payload["version"]
        return terms

    def _terms_of(self, prefix: str) -> dict[str, OntologyTerm]:
        prefix = prefix.upper()
        if prefix not in self._terms:
            source = self._sources.get(prefix)
            if source is None:
                return {}
            if callable(source):
                return self._add_payload(source())
            self._terms[prefix] = {term.id: term for term in source}
        return self._terms[prefix]

    # -- queries --------------------------------------------------------------------------
    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def terms(self, prefix: str) -> list[OntologyTerm]:
        """Every term of one ontology (``"CL"``), in id order."""
        return sorted(self._terms_of(prefix).values(), key=lambda term: term.id)

    def term(self, term_id: str) -> OntologyTerm | None:
        """Term for ``term_id`` (``CL:0000236`` or ``CL_0000236``), following deprecations."""
        normalized = normalize_term_id(term_id)
        if normalized is None:
            return None
        prefix = normalized.split(":", 1)[0]
        terms = self._terms_of(prefix)
        seen = set()
        while normalized not in terms and normalized in self._replaced_by and normalized not in seen:
            seen.add(normalized)
            normalized = self._replaced_by[normalized]
            terms = self._terms_of(normalized.split(":", 1)[0])
        return terms.get(normalized)

    def ancestors(self, term_id: str) -> dict[str, int]:
        """Every ancestor of a term → its distance in edges (1 = parent), nearest first; the term
        itself excluded. The closure of :attr:`OntologyTerm.parents` (shortest paths); ``{}`` for
        an unknown id or a root. Cached per term."""
        term = self.term(term_id)
        if term is None:
            return {}
        if term.id not in self._ancestors:
            found: dict[str, int] = {}
            frontier, distance = list(term.parents), 1
            while frontier:
                fresh = [parent for parent in dict.fromkeys(frontier) if parent not in found and parent != term.id]
                found.update((parent, distance) for parent in fresh)
                frontier = [grand for parent in fresh if (known := self.term(parent)) for grand in known.parents]
                distance += 1
            self._ancestors[term.id] = found
        return dict(self._ancestors[term.id])

    def descendants(self, term_id: str) -> list[str]:
        """Ids of every descendant of a term (children, their children, ...), the term itself
        excluded, in id order; ``[]`` for an unknown id or a leaf. Inverts :attr:`OntologyTerm.parents`
        over the term's ontology (index built once per ontology)."""
        term = self.term(term_id)
        if term is None:
            return []
        prefix = term.id.split(":", 1)[0]
        if prefix not in self._children:
            children: dict[str, list[str]] = {}
            for child in self._terms_of(prefix).values():
                for parent in child.parents:
                    children.setdefault(parent, []).append(child.id)
            self._children[prefix] = children
        children, found, frontier = self._children[prefix], set(), [term.id]
        while frontier:
            fresh = [child for parent in frontier for child in children.get(parent, ()) if child not in found]
            found.update(fresh)
            frontier = fresh
        found.discard(term.id)
        return sorted(found)

    def match_label(self, text: str, ontology: str | None = "CL") -> str | None:
        """Id of the one term whose label (else synonym) equals ``text``; None if none or ambiguous.

        Matching is case-insensitive, treats hyphens, underscores and whitespace runs alike,
        and retries with the last word singular ("B cells" → "B cell"). Labels beat synonyms;
        two different terms at the same level give None (ambiguous). ``ontology`` restricts
        the search to one prefix; None searches every ontology.
        """
        if not isinstance(text, str) or not text.strip():
            return None
        prefixes = self.prefixes if ontology is None else (ontology.upper(),)
        key = normalize_label(text)
        for candidate in (key, _singular(key)):
            if candidate is None:
                continue
            for level in ("labels", "synonyms"):
                hits = set()
                for prefix in prefixes:
                    hits |= getattr(self._index(prefix), level).get(candidate, set())
                if len(hits) == 1:
                    return next(iter(hits))
                if hits:
                    return None
        return None

    def _index(self, prefix: str) -> _LabelIndex:
        if prefix not in self._indexes:
            self._indexes[prefix] = _LabelIndex(self._terms_of(prefix).values())
        return self._indexes[prefix]

    def __len__(self) -> int:
        return sum(len(self._terms_of(prefix)) for prefix in self.prefixes)

