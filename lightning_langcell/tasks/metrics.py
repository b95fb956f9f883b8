"""The results files of a classification test run (JSON summary, per-cell predictions CSV).

The metrics themselves are :mod:`lightning_langcell.inference.metrics` (shared with inference).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_langcell.io_utils import atomic_file


def cells_per_class(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Number of cells of each class among ``labels`` (class indices; negatives = unlabelled)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {name: int(count) for name, count in zip(classes, counts)}


def predictions_csv(
    cell_index: np.ndarray, target: np.ndarray, prediction: np.ndarray, classes: Sequence[str]
) -> str:
    """CSV text, one row per evaluated cell sorted by corpus position: ``cell_index`` (row of
    the corpus / of the concatenated input .h5ad files), ``label``/``prediction`` (class indices,
    -100 for an unknown label) and their class names."""
    order = np.argsort(cell_index, kind="stable")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["cell_index", "label", "prediction", "label_name", "prediction_name"])
    for i in order:
        label, predicted = int(target[i]), int(prediction[i])
        writer.writerow(
            [int(cell_index[i]), label, predicted, classes[label] if label >= 0 else "", classes[predicted]]
        )
    return buffer.getvalue()


def write_results(
    directory: str | Path,
    results: Mapping[str, Any],
    predictions: Mapping[str, np.ndarray] | None = None,
    classes: Sequence[str] = (),
    stage: str = "test",
) -> Path:
    """Write ``{stage}_results.json`` (and ``{stage}_predictions.csv``) into ``directory``.

    ``results`` is any JSON-able mapping (metrics, seed, split sizes, classes, settings);
    ``predictions`` holds equal-length arrays ``cell_index``, ``target``, ``prediction``.
    Both files are written atomically. Returns the path of the JSON file.
    """
    directory = Path(directory)
    record = dict(results)
    if predictions is not None:
        name = f"{stage}_predictions.csv"
        text = predictions_csv(predictions["cell_index"], predictions["target"], predictions["prediction"], classes)
        with atomic_file(directory / name, "w") as handle:
            handle.write(text)
        record["predictions_file"] = name
    path = directory / f"{stage}_results.json"
    with atomic_file(path, "w") as handle:
        json.dump(record, handle, indent=2, default=_json_default)
        handle.write("\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
