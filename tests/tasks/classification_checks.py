"""Checks shared by the task tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

PBMC = "data/cells/pbmc68k_reduced.h5ad"  # 700 human PBMCs, 10 types, smallest class 8 cells
LUNG = "data/cells/mouse_lung_injury.h5ad"  # 549 mouse lung cells, 11 types, one with 1 cell


def read_results(run_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``test_results.json`` and the columns of ``test_predictions.csv`` of a run folder."""
    results = json.loads((run_dir / "test_results.json").read_text())
    with open(run_dir / results["predictions_file"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {key: np.array([int(row[key]) for row in rows]) for key in ("cell_index", "label", "prediction")}
    columns["label_name"] = np.array([row["label_name"] for row in rows])
    return results, columns


def reference_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The four reported metrics, recomputed from their definitions with numpy.

    Classes = those occurring in labels or predictions (as scikit-learn); F1 = 2·TP / (support +
    predicted); balanced accuracy = mean recall over the classes that occur in the labels.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = np.union1d(labels, predictions)
    true_positives = np.array([np.sum((labels == c) & (predictions == c)) for c in classes])
    support = np.array([np.sum(labels == c) for c in classes])
    predicted = np.array([np.sum(predictions == c) for c in classes])
    f1 = 2 * true_positives / (support + predicted)
    present = support > 0
    return {
        "accuracy": float(np.mean(labels == predictions)),
        "balanced_accuracy": float(np.mean(true_positives[present] / support[present])),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float(np.sum(f1 * support) / support.sum()),
    }
