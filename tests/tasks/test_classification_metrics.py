"""Classification metrics and the results files: values against their definitions, files read back."""

import json

import numpy as np
import pytest
import torch
from classification_checks import reference_metrics

from lightning_langcell.data.masking import IGNORE_INDEX
from lightning_langcell.inference.metrics import METRIC_NAMES, classification_metric_collection
from lightning_langcell.tasks.metrics import cells_per_class, write_results


def _random_predictions(seed: int, n: int = 300, classes: int = 6):
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, classes - 1, n)  # the last class never occurs as a label
    noise = generator.integers(0, classes, n)  # ... but is sometimes predicted
    predictions = np.where(generator.random(n) < 0.6, labels, noise)
    return labels, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_their_definitions_in_batches(seed):
    labels, predictions = _random_predictions(seed)
    metrics = classification_metric_collection(6, prefix="test/")
    for chunk in np.array_split(np.arange(len(labels)), 7):  # accumulate like an epoch of batches
        metrics.update(torch.as_tensor(predictions[chunk]), torch.as_tensor(labels[chunk]))
    values = {name.removeprefix("test/"): value.item() for name, value in metrics.compute().items()}
    assert set(values) == set(METRIC_NAMES)
    expected = reference_metrics(labels, predictions)
    for name in METRIC_NAMES:
        assert values[name] == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_metrics_equal_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    labels, predictions = _random_predictions(seed)
    expected = {
        "accuracy": metrics.accuracy_score(labels, predictions),
        "balanced_accuracy": metrics.balanced_accuracy_score(labels, predictions),
        "macro_f1": metrics.f1_score(labels, predictions, average="macro"),
        "weighted_f1": metrics.f1_score(labels, predictions, average="weighted"),
    }
    assert reference_metrics(labels, predictions) == pytest.approx(expected, abs=1e-12)


def test_unlabelled_cells_are_ignored():
    labels, predictions = _random_predictions(3)
    with_unknown = labels.copy()
    with_unknown[::5] = IGNORE_INDEX
    metrics = classification_metric_collection(6)
    metrics.update(torch.as_tensor(predictions), torch.as_tensor(with_unknown))
    known = with_unknown != IGNORE_INDEX
    expected = reference_metrics(labels[known], predictions[known])
    for name, value in metrics.compute().items():
        assert value.item() == pytest.approx(expected[name], abs=1e-6)


def test_balanced_accuracy_is_mean_recall_over_target_classes():
    # class 0: 2 of 4 right; class 1: 1 of 1 right; class 2 only predicted (not a target).
    labels = torch.tensor([0, 0, 0, 0, 1])
    predictions = torch.tensor([0, 0, 2, 2, 1])
    metrics = classification_metric_collection(3)
    metrics.update(predictions, labels)
    values = {k: v.item() for k, v in metrics.compute().items()}
    assert values["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert values["accuracy"] == pytest.approx(3 / 5)
    # F1: class 0 = 2·1·0.5/1.5 = 2/3, class 1 = 1, class 2 = 0 (predicted, never right)
    assert values["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert values["weighted_f1"] == pytest.approx((4 * 2 / 3 + 1) / 5)


def test_cells_per_class_skips_unknown_labels():
    counts = cells_per_class(np.array([0, 2, 2, -100, -1, 2]), ["a", "b", "c"])
    assert counts == {"a": 1, "b": 0, "c": 3}


def test_write_results_files_read_back(tmp_path):
    classes = ["B cell", "T cell"]
    predictions = {
        "cell_index": np.array([7, 3, 5]),
        "target": np.array([1, 0, IGNORE_INDEX]),
        "prediction": np.array([1, 1, 0]),
    }
    record = {"metrics": {"accuracy": np.float32(0.5)}, "seed": 3, "split_sizes": {"train": 2, "test": 3}}
    path = write_results(tmp_path / "run", record, predictions, classes)
    assert path == tmp_path / "run" / "test_results.json"
    saved = json.loads(path.read_text())
    assert saved == {**record, "metrics": {"accuracy": 0.5}, "predictions_file": "test_predictions.csv"}
    lines = (tmp_path / "run" / "test_predictions.csv").read_text().splitlines()
    assert lines == [
        "cell_index,label,prediction,label_name,prediction_name",
        "3,0,1,B cell,T cell",
        "5,-100,0,,B cell",
        "7,1,1,T cell,T cell",
    ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["test_predictions.csv", "test_results.json"]
