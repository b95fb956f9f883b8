"""Annotation quality against ground truth, and the confusion-matrix figure.

The four numbers are those of every classification task
(:func:`lightning_langcell.tasks.metrics.classification_metrics`: accuracy, balanced accuracy
over the classes present in the truth, macro-F1 and weighted-F1, as scikit-learn defines them),
over the cells whose true label is one of the candidate classes (``target >= 0``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix


def _counted(target, preds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target, preds = torch.as_tensor(target, dtype=torch.long), torch.as_tensor(preds, dtype=torch.long)
    counted = target >= 0
    return target[counted], preds[counted], counted


def classification_metrics(target: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                           num_classes: int) -> dict[str, float]:
    """Metrics of ``preds`` [N] against ``target`` [N] (class indices; target -1 = not counted).

    Returns ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``weighted_f1`` (NaN without any
    counted cell) and ``n_evaluated`` / ``n_not_evaluated``.
    """
    from lightning_langcell.tasks.metrics import METRIC_NAMES
    from lightning_langcell.tasks.metrics import classification_metrics as metric_collection

    target, preds, counted = _counted(target, preds)
    out = {"n_evaluated": int(counted.sum()), "n_not_evaluated": int((~counted).sum())}
    if target.numel() == 0:
        return {**{name: float("nan") for name in METRIC_NAMES}, **out}
    values = metric_collection(num_classes)(preds, target)
    return {**{name: float(values[name]) for name in METRIC_NAMES}, **out}


def confusion_matrix(target: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """Counts [C, C] (rows: true class, columns: predicted) of the counted cells (target >= 0)."""
    target, preds, _ = _counted(target, preds)
    return multiclass_confusion_matrix(preds, target, num_classes).numpy()


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "LangCell zero-shot"):
    """A matplotlib figure of a confusion matrix, rows normalised to the true class (counts printed)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    counts = np.asarray(matrix)
    rows = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(fraction, vmin=0, vmax=1, cmap="Blues")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels=class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= 30:
        for (i, j), count in np.ndenumerate(counts):
            if count:
                axes.text(j, i, int(count), ha="center", va="center", fontsize=7,
                          color="white" if fraction[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of true class")
    figure.tight_layout()
    return figure
