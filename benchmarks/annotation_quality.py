"""Annotation rows of the quality suite: few-shot adapters, open-set AUROC and ontology hierarchy.

Each function scores one dataset of :func:`benchmarks.quality.run_quality` (same split, same
frozen checkpoint) or, for the back-off thresholds, the checkpoint's pre-training datasets:

- :func:`adapter_rows`: :mod:`benchmarks.few_shot_adapters` on the cells the suite already
  annotated at α = 0.1 (no second embedding pass);
- :func:`open_set_row`: :mod:`benchmarks.open_set_benchmark`'s leave-one-type-out AUROC of the
  unknown score on (a stratified subsample of) the test split, mean ± sd over the left-out types;
- :func:`hierarchy_row`: :func:`~lightning_langcell.inference.hierarchy.hierarchical_scores` of
  the zero-shot α = 0.1 predictions (each label mapped to its Cell Ontology id);
- :func:`class_scaling_rows`: :mod:`benchmarks.class_scaling_quality` (exact vs top-k at 10, 100,
  1,000 and all Cell Ontology classes) on (a stratified subsample of) the test split;
- :func:`threshold_rows`: :mod:`benchmarks.hierarchy_thresholds`' grid on the pre-training
  recipe's held-out test cells, reported per dataset without back-off and at the chosen pair.
"""

from __future__ import annotations

import warnings

import numpy as np

HIERARCHY_METRICS = ("accuracy", "hierarchical_f1", "correct_or_ancestor")
LABEL = "cell_type"
ID_COLUMN = f"{LABEL}_ontology_term_id"


def adapter_rows(data, annotated, model, text_tokenizer, ks: list[int], seeds: list[int]) -> list[dict]:
    """Zero-shot, CTC-only, logistic regression and both adapters per k (mean ± sd over ``seeds``)."""
    from benchmarks.few_shot_adapters import dataset_rows, frozen_from_annotated

    frozen = frozen_from_annotated(data, annotated, model, text_tokenizer)
    return dataset_rows(data, frozen, ks, seeds)


def open_set_row(data, max_cells: int, log=print) -> dict:
    """Mean ± sd over left-out types of the AUROC of each unknown score, and the per-type rows."""
    from benchmarks.open_set_benchmark import left_out_rows
    from benchmarks.quality import _capped
    from lightning_langcell.inference.open_set import UNKNOWN_SCORES

    cells = data.adata[data.test]
    cells = cells[_capped(data.labels[data.test], max_cells)].copy()
    term_of = label_term_ids(data)
    cells.obs[ID_COLUMN] = [term_of[label] for label in cells.obs[LABEL].astype(str)]  # ACTINN has no id column
    per_type = left_out_rows(data.name, cells, log=lambda _: None)
    row = {"dataset": data.name, "n_cells": int(cells.n_obs), "n_types": len(per_type), "per_type": per_type}
    for kind in UNKNOWN_SCORES:
        values = np.array([r[f"auroc_{kind}"] for r in per_type], dtype=float)
        values = values[~np.isnan(values)]
        row[f"auroc_{kind}"] = round(float(values.mean()), 4) if len(values) else None
        row[f"auroc_{kind}_sd"] = round(float(values.std(ddof=1)), 4) if len(values) > 1 else 0.0
    log(f"{data.name}: open-set AUROC (entropy, the default) {row['auroc_entropy']} over {row['n_types']} "
        "left-out types")
    return row


def class_scaling_rows(data, max_cells: int, log=print) -> list[dict]:
    """Exact vs top-k rows at each class count on at most ``max_cells`` test cells of ``data``."""
    from benchmarks.class_scaling_quality import COUNTS, TOP_KS, dataset_rows

    return dataset_rows(data, max_cells, COUNTS, TOP_KS, log)[0]


def label_term_ids(data) -> dict[str, str]:
    """Cell Ontology id of each label of ``data``, as zero-shot resolves it (the dataset's id column
    where present, else the bundled ontology's names: ACTINN has no id column)."""
    from lightning_langcell.inference.classes import candidate_classes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = candidate_classes(None, data.adata.obs, LABEL)
    return dict(zip(candidates.names, candidates.term_ids))


def hierarchy_row(data, predicted: np.ndarray, method: str) -> dict:
    """Exact accuracy, hierarchical F1 and correct-or-ancestor of predicted labels [n_test] on the test split."""
    from lightning_langcell.inference.hierarchy import hierarchical_scores

    term_of = label_term_ids(data)
    scores = hierarchical_scores([term_of[str(label)] for label in data.labels[data.test]],
                                 [term_of.get(str(label)) for label in predicted])
    return {"dataset": data.name, "method": method, "n_test": int(len(data.test)),
            **{key: round(float(value), 4) for key, value in scores.items() if key != "n_evaluated"},
            "n_evaluated": int(scores["n_evaluated"])}


def threshold_rows(recipe_tests: dict[str, np.ndarray], names: list[str]) -> dict:
    """Back-off thresholds chosen on the pre-training datasets' held-out cells (criterion of
    :mod:`benchmarks.hierarchy_thresholds`), with per-dataset rows without back-off and at the choice."""
    from benchmarks.hierarchy_thresholds import dataset_scores, grid

    grid_rows = grid({name: dataset_scores(name, recipe_tests[name]) for name in names})
    best = max(grid_rows, key=lambda row: (round(row["mean"]["hierarchical_f1"], 6),
                                           -row["mean"]["backoff_fraction"]))
    rows, compared = [], [("no back-off", grid_rows[0]), ("back-off at the chosen thresholds", best)]
    for label, chosen in compared[:1] if best is grid_rows[0] else compared:  # threshold 0 chosen: one set
        rows += [{"dataset": name, "method": label, **{key: round(float(scores[key]), 4) for key in
                  (*HIERARCHY_METRICS, "backoff_fraction")}} for name, scores in chosen["datasets"].items()]
    return {"chosen": {"threshold": best["threshold"], "ancestor_threshold": best["ancestor_threshold"]},
            "criterion": "highest mean hierarchical F1 over the pre-training datasets; ties: least back-off",
            "grid_size": len(grid_rows), "rows": rows}
