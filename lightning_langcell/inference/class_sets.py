"""Named sets of candidate classes from the Cell Ontology, for ontology-wide zero-shot.

A class set is one string where a class list is expected (``classes=...``):

- ``"CL:all"``: every bundled Cell Ontology term with a definition (3,221 in the bundled CL);
- ``"CL:0000988+"``: a term and all its descendants (via the bundled ``parents``) that have a
  definition (``+`` = "and everything below");
- ``"preset:blood"``: a tissue preset from ``resources/class_presets.json`` (``blood``, ``lung``,
  ``pancreas``, ``brain``: the main types atlases of the tissue annotate, hand-picked).

Only terms with a definition take part: a class text is ``"cell type: <label>. <definition>; "``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.text import Ontology
from lightning_langcell.text.ontology import normalize_term_id

ALL_CLASSES = "CL:all"
PRESET_PREFIX = "preset:"
SUBTREE_SUFFIX = "+"
CLASS_SET_HELP = (f"Use {ALL_CLASSES!r} (every Cell Ontology term with a definition), 'CL:<id>+' (a term and its "
                  f"descendants, e.g. 'CL:0000988+'), or '{PRESET_PREFIX}<name>' with a preset of {{names}}.")


@functools.lru_cache(maxsize=1)
def class_presets() -> dict[str, tuple[str, ...]]:
    """Tissue presets: name → Cell Ontology ids (from the package's ``class_presets.json``)."""
    source = resources.files("lightning_langcell.inference") / "resources" / "class_presets.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    return {name: tuple(ids) for name, ids in data.items() if not name.startswith("_")}


def is_class_set(spec: object) -> bool:
    """True for a class-set string (``"CL:all"``, ``"CL:<id>+"``, ``"preset:<name>"``)."""
    if not isinstance(spec, str):
        return False
    spec = spec.strip()
    return spec.lower() == ALL_CLASSES.lower() or spec.endswith(SUBTREE_SUFFIX) or spec.lower().startswith(PRESET_PREFIX)


def _with_definition(ids, ontology: Ontology) -> list[str]:
    return [term.id for term_id in ids if (term := ontology.term(term_id)) is not None and term.definition]


def subtree_ids(root: str, ontology: Ontology | None = None) -> list[str]:
    """``root`` and every descendant with a definition: root first, then in id order."""
    ontology = ontology if ontology is not None else Ontology.bundled()
    term = ontology.term(root) if normalize_term_id(root) else None
    if term is None:
        raise LangCellInputError(f"Class subtree root {root!r} is not a Cell Ontology term of the bundled ontology.",
                                 "Give an existing id such as 'CL:0000988+' (hematopoietic cell and below).")
    return _with_definition([term.id, *ontology.descendants(term.id)], ontology)


def all_class_ids(ontology: Ontology | None = None) -> list[str]:
    """Every bundled Cell Ontology term with a definition, in id order."""
    ontology = ontology if ontology is not None else Ontology.bundled()
    return [term.id for term in ontology.terms("CL") if term.definition]


def preset_ids(name: str) -> list[str]:
    """The ids of a tissue preset; errors list the presets there are."""
    presets = class_presets()
    if name not in presets:
        raise LangCellInputError(f"Unknown class preset {name!r}.",
                                 f"Use one of {sorted(presets)}: classes='{PRESET_PREFIX}<name>'.")
    return list(presets[name])


def class_set_ids(spec: str, ontology: Ontology | None = None) -> list[str]:
    """Cell Ontology ids of a class-set string (see the module doc), without duplicates."""
    spec = spec.strip()
    if spec.lower() == ALL_CLASSES.lower():
        return all_class_ids(ontology)
    if spec.lower().startswith(PRESET_PREFIX):
        return preset_ids(spec[len(PRESET_PREFIX):].strip().lower())
    if spec.endswith(SUBTREE_SUFFIX):
        return subtree_ids(spec[: -len(SUBTREE_SUFFIX)].strip(), ontology)
    raise LangCellInputError(f"{spec!r} is not a class set.", CLASS_SET_HELP.format(names=sorted(class_presets())))
