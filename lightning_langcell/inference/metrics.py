"""Cell-type classification metrics shared by inference and the tasks, and the confusion-matrix figure.

The four numbers reported for every classification, over cells with a known label:

- ``accuracy``: fraction of cells predicted correctly (micro average);
- ``balanced_accuracy``: mean recall over the classes present in the targets (as
  ``sklearn.metrics.balanced_accuracy_score``; a class that is predicted but never a target
  does not count, unlike torchmetrics' macro recall);
- ``macro_f1``: unweighted mean F1 over the classes that occur in targets or predictions;
- ``weighted_f1``: F1 averaged with the number of target cells of each class as weight.

:func:`classification_metric_collection` accumulates them over batches (exact under DDP; targets
equal to ``IGNORE_INDEX`` are skipped); :func:`classification_scores` computes them at once from
arrays (targets < 0 are skipped) as plain floats.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_confusion_matrix

from lightning_langcell.data.masking import IGNORE_INDEX

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")


class BalancedAccuracy(MulticlassConfusionMatrix):
    """Mean per-class recall over the classes that occur in the targets (a scalar tensor).

    Accumulates a confusion matrix (summed across ranks), so it is exact under DDP.
    ``update(preds, target)`` takes class indices [N] or scores [N, C] and targets [N].
    """

    def compute(self) -> torch.Tensor:
        matrix = super().compute().double()  # [C, C], rows = target class
        support = matrix.sum(dim=1)
        present = support > 0
        if not bool(present.any()):
            return torch.tensor(0.0, device=matrix.device)
        return (matrix.diagonal()[present] / support[present]).mean().float()


def classification_metric_collection(num_classes: int, prefix: str = "") -> MetricCollection:
    """The four metrics of :data:`METRIC_NAMES` for ``num_classes`` classes, keys ``prefix + name``."""
    common = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **common),
            "balanced_accuracy": BalancedAccuracy(**common),
            "macro_f1": MulticlassF1Score(average="macro", **common),
            "weighted_f1": MulticlassF1Score(average="weighted", **common),
        },
        prefix=prefix,
    )


def _counted(target, preds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target, preds = torch.as_tensor(target, dtype=torch.long), torch.as_tensor(preds, dtype=torch.long)
    counted = target >= 0
    return target[counted], preds[counted], counted


def classification_scores(target: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                          num_classes: int) -> dict[str, float]:
    """Metrics of ``preds`` [N] against ``target`` [N] (class indices; target -1 = not counted).

    Returns ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``weighted_f1`` (NaN without any
    counted cell) and ``n_evaluated`` / ``n_not_evaluated``.
    """
    target, preds, counted = _counted(target, preds)
    out = {"n_evaluated": int(counted.sum()), "n_not_evaluated": int((~counted).sum())}
    if target.numel() == 0:
        return {**{name: float("nan") for name in METRIC_NAMES}, **out}
    values = classification_metric_collection(num_classes)(preds, target)
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
