"""The Cell Ontology's hierarchy over zero-shot predictions: aggregated probabilities, back-off and
ontology-aware scores.

- :class:`ClassHierarchy` links C candidate classes (their CL term ids) to M ontology *nodes*:
  every candidate term and every ancestor of one (ontology roots left out: "cell" is always
  true and says nothing). A node's aggregated probability is the sum of the probabilities of
  the candidates at or below it: a class's own probability plus its descendants' among the
  candidates, and for an ancestor the sum over the candidates below it.
- :meth:`ClassHierarchy.back_off`: when the best class's probability is below ``threshold``,
  predict the deepest node at or above it whose aggregated probability reaches
  ``ancestor_threshold`` ("T cell" rather than an unsure "CD8-positive T cell"), with its
  back-off level (0 = the class itself, 1 = a parent, 2 = a grandparent, ...).
- :func:`hierarchical_scores`: exact accuracy, hierarchical precision / recall / F1 over ancestor
  sets (Kiritchenko et al. 2005) and the fraction of predictions that are the truth or one of
  its ancestors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.output import BACKOFF_LEVEL_KEY, TERM_ID_KEY, TERM_LABEL_KEY
from lightning_langcell.text import Ontology

# Chosen by benchmarks/hierarchy_thresholds.py on langcell-tiny-bundled's pre-training datasets (their
# held-out cells; never the never-seen test sets): no (threshold, ancestor_threshold) pair raised the mean
# hierarchical F1 above no back-off (0.947), so the default never backs off. The final probabilities are flat
# (at most e / (e + C - 1) from the matcher's share), so useful thresholds are near 1 / C, not 0.5.
DEFAULT_THRESHOLD = 0.0
DEFAULT_ANCESTOR_THRESHOLD = 0.8  # "sure" for users who raise the threshold; not determined by that data


def is_root(term_id: str, ontology: Ontology) -> bool:
    """True for a term without parents (CL: "cell"); unknown ids are not roots."""
    term = ontology.term(term_id)
    return term is not None and not term.parents


def ancestor_set(term_id: str | None, ontology: Ontology) -> frozenset[str]:
    """The term and all its ancestors, roots excluded (empty for None)."""
    if term_id is None or (isinstance(term_id, float) and np.isnan(term_id)):
        return frozenset()
    found = {term_id, *ontology.ancestors(term_id)}
    return frozenset(node for node in found if not is_root(node, ontology))


@dataclass(frozen=True)
class HierarchicalPredictions:
    """Back-off predictions of n cells: ``term_ids`` / ``labels`` [n] (object; None for a class
    without term id: its label is the class name), ``levels`` [n] int64 (0 = the best class) and
    ``probabilities`` [n] (the best class's probability at level 0, else the node's aggregate)."""

    term_ids: np.ndarray
    labels: np.ndarray
    levels: np.ndarray
    probabilities: np.ndarray

    def take(self, index: np.ndarray) -> "HierarchicalPredictions":
        """The predictions of some cells (``index``: positions or a boolean mask)."""
        return HierarchicalPredictions(self.term_ids[index], self.labels[index], self.levels[index],
                                       self.probabilities[index])

    def obs_columns(self, n_obs: int, rows: np.ndarray) -> dict[str, pd.Categorical | np.ndarray]:
        """Full-length obs columns for ``n_obs`` cells, these predictions at ``rows``
        (other cells: no term (categorical missing), level -1)."""
        term_ids = np.full(n_obs, None, dtype=object)
        labels = np.full(n_obs, None, dtype=object)
        levels = np.full(n_obs, -1, dtype=np.int64)
        term_ids[rows], labels[rows], levels[rows] = self.term_ids, self.labels, self.levels
        return {TERM_ID_KEY: pd.Categorical(term_ids), TERM_LABEL_KEY: pd.Categorical(labels), BACKOFF_LEVEL_KEY: levels}


class ClassHierarchy:
    """Candidate classes placed in the ontology (see the module doc).

    Args:
        term_ids: CL term id of each candidate class [C] (None: the class stays outside the
            hierarchy; it aggregates nothing and never backs off).
        ontology: where parents come from (the bundled one when None).
        class_names: names shown for classes without term id (default: their index).

    Attributes: ``node_ids`` / ``node_labels`` [M]; ``distance`` [C, M] int64, the number of
    edges from class c up to node m (0: its own term), -1 when m is not at or above c.
    """

    def __init__(self, term_ids: Sequence[str | None], ontology: Ontology | None = None,
                 class_names: Sequence[str] | None = None):
        self.ontology = ontology if ontology is not None else Ontology.bundled()
        self.class_ids = [None if term is None else self._known_id(term) for term in term_ids]
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(len(term_ids))]
        paths = [{} if term is None else {term: 0, **self.ontology.ancestors(term)} for term in self.class_ids]
        own = {term for term in self.class_ids if term is not None}
        nodes = list(dict.fromkeys(node for path in paths for node in path
                                   if node in own or not is_root(node, self.ontology)))
        index = {node: m for m, node in enumerate(nodes)}
        self.node_ids = nodes
        self.node_labels = [self.ontology.term(node).label for node in nodes]
        self.distance = np.full((len(paths), len(nodes)), -1, dtype=np.int64)
        for c, path in enumerate(paths):
            for node, steps in path.items():
                if node in index:
                    self.distance[c, index[node]] = steps

    def _known_id(self, term_id: str) -> str:
        term = self.ontology.term(term_id)
        if term is None:
            raise LangCellInputError(f"Candidate term {term_id!r} is not in the ontology.",
                                     "Use Cell Ontology ids of the bundled CL (e.g. 'CL:0000084'), or hierarchy=False.")
        return term.id

    def aggregate(self, probabilities: np.ndarray) -> np.ndarray:
        """Aggregated probabilities [N, M] of class probabilities [N, C]: each node's sum over the
        candidates at or below it."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[1] != self.distance.shape[0]:
            raise LangCellInputError(f"Probabilities of shape {probabilities.shape} for {self.distance.shape[0]} classes.",
                                     "Pass one row per cell and one column per candidate class.")
        return probabilities @ (self.distance >= 0).astype(np.float64)

    def back_off(self, probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                 ancestor_threshold: float = DEFAULT_ANCESTOR_THRESHOLD) -> HierarchicalPredictions:
        """Per cell: the best class when its probability is at least ``threshold``; otherwise the
        deepest node at or above it (fewest edges; ties: the larger aggregate) whose aggregated
        probability is at least ``ancestor_threshold``; the best class when there is none."""
        for name, value in (("threshold", threshold), ("ancestor_threshold", ancestor_threshold)):
            if not 0.0 <= value <= 1.0:
                raise LangCellInputError(f"{name} must lie in [0, 1], got {value}.",
                                         "Use e.g. threshold=0.5, ancestor_threshold=0.8.")
        probabilities = np.asarray(probabilities, dtype=np.float64)
        aggregated = self.aggregate(probabilities)
        rows = np.arange(len(probabilities))
        best = probabilities.argmax(axis=1)
        best_probability = probabilities[rows, best]
        steps = self.distance[best]  # [N, M]
        eligible = (steps >= 0) & (aggregated >= ancestor_threshold)
        key = np.where(eligible, steps - 0.5 * aggregated, np.inf)  # fewest steps, then the larger aggregate
        choice = key.argmin(axis=1) if key.shape[1] else np.zeros(len(rows), dtype=np.int64)
        backs_off = (best_probability < threshold) & eligible.any(axis=1)
        levels = np.where(backs_off, steps[rows, choice] if steps.shape[1] else 0, 0).astype(np.int64)
        class_ids = np.asarray(self.class_ids, dtype=object)[best]
        class_labels = np.asarray([self._class_label(c) for c in range(len(self.class_ids))], dtype=object)[best]
        node_ids = np.asarray(self.node_ids + [None], dtype=object)
        node_labels = np.asarray(self.node_labels + [None], dtype=object)
        picked = np.where(backs_off, choice, len(self.node_ids))
        return HierarchicalPredictions(
            term_ids=np.where(backs_off, node_ids[picked], class_ids),
            labels=np.where(backs_off, node_labels[picked], class_labels),
            levels=levels,
            probabilities=np.where(backs_off, aggregated[rows, choice] if aggregated.shape[1] else 0.0,
                                   best_probability),
        )

    def _class_label(self, c: int) -> str:
        term = self.class_ids[c]
        return self.ontology.term(term).label if term is not None else self.class_names[c]


def _canonical(term_id: object, ontology: Ontology) -> str | None:
    """The ontology's id for ``term_id`` ("CL_0000084" → "CL:0000084", deprecations followed);
    None for a missing value; unknown ids unchanged."""
    if term_id is None or (isinstance(term_id, float) and np.isnan(term_id)) or term_id is pd.NA:
        return None
    term = ontology.term(str(term_id))
    return term.id if term is not None else str(term_id)


def hierarchical_scores(true_ids: Sequence[str | None], pred_ids: Sequence[str | None],
                        ontology: Ontology | None = None) -> dict[str, float]:
    """Ontology-aware scores of predicted term ids against true term ids (cells whose true id is
    None/NaN are not counted; a None prediction is wrong and has an empty ancestor set).

    With ``T_i`` / ``P_i`` the true / predicted term plus all its ancestors, roots excluded:

    - ``accuracy``: fraction of exact matches;
    - ``hierarchical_precision`` = Σ|P_i ∩ T_i| / Σ|P_i|, ``hierarchical_recall`` =
      Σ|P_i ∩ T_i| / Σ|T_i|, ``hierarchical_f1`` their harmonic mean (Kiritchenko et al.,
      micro-averaged over cells): a prediction one level too general loses only a little recall,
      a wrong sibling keeps the shared ancestors;
    - ``correct_or_ancestor``: fraction of predictions equal to the truth or one of its ancestors
      (backing off never counts as an error here, a wrong specific type does);
    - ``n_evaluated``.
    """
    ontology = ontology if ontology is not None else Ontology.bundled()
    pairs = pd.DataFrame({"true": pd.Series(list(true_ids), dtype=object),
                          "pred": pd.Series(list(pred_ids), dtype=object)})
    if len(pairs) != len(pred_ids):
        raise LangCellInputError(f"{len(true_ids)} true ids for {len(pred_ids)} predictions.",
                                 "Pass one true and one predicted term id per cell.")
    pairs = pairs[pairs["true"].notna()].apply(lambda column: column.map(lambda term: _canonical(term, ontology)))
    n = len(pairs)
    if n == 0:
        nan = float("nan")
        return {"accuracy": nan, "hierarchical_precision": nan, "hierarchical_recall": nan,
                "hierarchical_f1": nan, "correct_or_ancestor": nan, "n_evaluated": 0}
    counts = pairs.fillna({"pred": ""}).value_counts(["true", "pred"]).reset_index(name="count")
    both = predicted = truth = exact = above = 0
    for true_id, pred_id, count in counts.itertuples(index=False):
        pred_id = pred_id or None
        true_set, pred_set = ancestor_set(true_id, ontology), ancestor_set(pred_id, ontology)
        both += count * len(true_set & pred_set)
        predicted += count * len(pred_set)
        truth += count * len(true_set)
        exact += count * (pred_id == true_id)
        above += count * (pred_id is not None and (pred_id == true_id or pred_id in ontology.ancestors(true_id)))
    precision = both / predicted if predicted else 0.0
    recall = both / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": exact / n, "hierarchical_precision": precision, "hierarchical_recall": recall,
            "hierarchical_f1": f1, "correct_or_ancestor": above / n, "n_evaluated": int(n)}


def check_hierarchy_classes(term_ids: Sequence[str | None], names: Sequence[str],
                            ontology: Ontology | None = None) -> ClassHierarchy:
    """The :class:`ClassHierarchy` of the candidate classes; refuses classes none of which has a
    Cell Ontology id (nothing to back off to)."""
    if all(term is None for term in term_ids):
        raise LangCellInputError(
            f"hierarchy=True but none of the candidate classes has a Cell Ontology id: {list(names)[:5]}...",
            "Give the classes as CL ids or CL labels (e.g. 'CL:0000084' or 'T cell'), or hierarchy=False.")
    return ClassHierarchy(term_ids, ontology, names)


def hierarchy_results(hierarchy: ClassHierarchy, probabilities: np.ndarray, threshold: float,
                      ancestor_threshold: float, target: np.ndarray | None = None
                      ) -> tuple[HierarchicalPredictions, dict]:
    """Back-off predictions of the scored cells' ``probabilities`` [n, C] and the settings and
    figures stored in ``uns["langcell"]["hierarchy"]``; with ``target`` [n] (candidate index of the
    truth, -1 unknown): :func:`hierarchical_scores` of the exact and the backed-off predictions."""
    predictions = hierarchy.back_off(probabilities, threshold, ancestor_threshold)
    info = {"threshold": float(threshold), "ancestor_threshold": float(ancestor_threshold),
            "backoff_fraction": float((predictions.levels > 0).mean()) if len(predictions.levels) else 0.0}
    if target is not None and (np.asarray(target) >= 0).any():
        class_ids = np.asarray(hierarchy.class_ids + [None], dtype=object)
        true_ids = class_ids[np.where(np.asarray(target) >= 0, target, len(hierarchy.class_ids))]
        exact_ids = class_ids[np.asarray(probabilities).argmax(axis=1)]
        info["metrics_exact"] = hierarchical_scores(true_ids, exact_ids, hierarchy.ontology)
        info["metrics_backoff"] = hierarchical_scores(true_ids, predictions.term_ids, hierarchy.ontology)
    return predictions, info
