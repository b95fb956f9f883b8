"""Prompt ensembles: several class texts per candidate class, from the Cell Ontology.

Templates (each gives zero or more texts per class, all in the pre-training form):

- ``"official"``: the official text ``"cell type: X. <definition>; "`` (the single text of
  :func:`~lightning_langcell.inference.classes.candidate_classes`);
- ``"synonyms"``: each ontology synonym S of the class: ``"cell type: S. <definition>; "``;
- ``"label"``: the label alone: ``"cell type: X; "``;
- ``"parent"``: each direct parent P as context: ``"cell type: X, a kind of P. <definition>; "``.

``prompts`` is ``"official"`` (one text per class, the official path), ``"ensemble"`` (every
template), one template name, or a list of template names. Texts are de-duplicated per class; a
class for which the chosen templates write nothing (no synonym, no parent, no ontology term)
keeps its official text. The engine combines a class's texts
(:class:`~lightning_langcell.inference.zero_shot.TextGroups`): the mean of their L2-normalised
embeddings (renormalised) for the cell–text similarity, and the mean of their match
probabilities for the matcher.

Default :data:`DEFAULT_PROMPTS`, chosen by ``benchmarks/prompt_ensembles.py`` on the shipped
checkpoint's pre-training datasets (held-out cells), never on the never-seen test sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.classes import CandidateClasses
from lightning_langcell.text import Ontology, normalize_label
from lightning_langcell.text.descriptions import text_segment

PROMPT_TEMPLATES = ("official", "synonyms", "label", "parent")
PROMPT_SETS = {"official": ("official",), "ensemble": PROMPT_TEMPLATES}
DEFAULT_PROMPTS = "official"
ASPECT = "cell type"
PromptSpec = str | Sequence[str]


@dataclass(frozen=True)
class PromptTexts:
    """``texts`` [T] of every class and ``owner`` [T] (the class index of each text, classes in
    order, each with at least one text); ``templates``: the templates they came from."""

    texts: list[str]
    owner: list[int]
    templates: tuple[str, ...]

    @property
    def one_per_class(self) -> bool:
        """True when each class has exactly one text (the texts are then the classes, in order)."""
        return self.owner == list(range(len(self.owner)))


def prompt_templates(prompts: PromptSpec) -> tuple[str, ...]:
    """Template names of a prompt spec (see the module doc); a clear error for anything else."""
    fix = (f"Use prompts='official', 'ensemble', one of {list(PROMPT_TEMPLATES)}, or a list of them, "
           "e.g. prompts=['official', 'synonyms'].")
    if isinstance(prompts, str):
        if prompts in PROMPT_SETS:
            return PROMPT_SETS[prompts]
        names = [prompts]
    elif isinstance(prompts, Sequence) and all(isinstance(name, str) for name in prompts):
        names = list(prompts)
    else:
        raise LangCellInputError(f"prompts must be a string or a list of strings, got {prompts!r}.", fix)
    if not names:
        raise LangCellInputError("prompts is an empty list.", fix)
    unknown = [name for name in names if name not in PROMPT_TEMPLATES]
    if unknown:
        raise LangCellInputError(f"Unknown prompt template(s) {unknown}.", fix)
    return tuple(dict.fromkeys(names))


def template_texts(template: str, classes: CandidateClasses, index: int, ontology: Ontology) -> list[str]:
    """Texts one template writes for class ``index`` (possibly none)."""
    if template == "official":
        return [classes.texts[index]]
    if classes.labels is None or classes.definitions is None:
        return []
    label, definition = classes.labels[index], classes.definitions[index]
    if template == "label":
        return [text_segment(ASPECT, label, None)]
    term = ontology.term(classes.term_ids[index]) if classes.term_ids[index] else None
    if term is None:
        return []
    if template == "synonyms":
        return [text_segment(ASPECT, synonym, definition) for synonym in term.synonyms
                if normalize_label(synonym) != normalize_label(label)]
    parents = [parent.label for parent_id in term.parents if (parent := ontology.term(parent_id)) is not None]
    return [text_segment(ASPECT, f"{label}, a kind of {parent}", definition) for parent in parents]


def class_prompts(classes: CandidateClasses, prompts: PromptSpec = DEFAULT_PROMPTS,
                  ontology: Ontology | None = None) -> PromptTexts:
    """Every text of every class under ``prompts`` (see the module doc)."""
    templates = prompt_templates(prompts)
    ontology = ontology if ontology is not None else Ontology.bundled()
    texts, owner = [], []
    for index in range(len(classes)):
        written = [text for template in templates for text in template_texts(template, classes, index, ontology)]
        written = list(dict.fromkeys(written)) or [classes.texts[index]]
        texts += written
        owner += [index] * len(written)
    return PromptTexts(texts, owner, templates)
