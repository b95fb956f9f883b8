"""Helpers for the task tests: one corpus cache per session, in-process CLI runs on real cells."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

PBMC = "data/cells/pbmc68k_reduced.h5ad"  # 700 human PBMCs, 10 types, smallest class 8 cells
LUNG = "data/cells/mouse_lung_injury.h5ad"  # 549 mouse lung cells, 11 types, one with 1 cell


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """Tokenized corpora shared by every task test (each .h5ad is tokenized once)."""
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def run_cli(repo_root, corpus_cache, tmp_path, monkeypatch):
    """``run_cli(command, recipe, *extra, data=PBMC)``: the CLI in-process, in ``tmp_path``,
    with a tiny fresh model, short cells and a CPU trainer; returns the LightningCLI."""
    from lightning_langcell.cli import main

    monkeypatch.chdir(tmp_path)

    def run(command: str, recipe: str, *extra: str, data: str = PBMC):
        args = [
            command,
            "--config", str(repo_root / "recipes" / recipe),
            "--data.data", str(repo_root / data),
            "--data.cache_dir", str(corpus_cache),
            "--data.max_length", "64",
            "--model.init_args.init_from", "null",
            "--model.init_args.model", "tiny",
            "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            *extra,
        ]
        return main(args)

    return run


def read_results(run_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``test_results.json`` and the columns of ``test_predictions.csv`` of a run folder."""
    results = json.loads((run_dir / "test_results.json").read_text())
    with open(run_dir / results["predictions_file"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {key: np.array([int(row[key]) for row in rows]) for key in ("cell_index", "label", "prediction")}
    columns["label_name"] = np.array([row["label_name"] for row in rows])
    return results, columns


def sklearn_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The four reported metrics recomputed independently with scikit-learn."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {
        "accuracy": accuracy_score(labels, predictions),
        "balanced_accuracy": balanced_accuracy_score(labels, predictions),
        "macro_f1": f1_score(labels, predictions, average="macro"),
        "weighted_f1": f1_score(labels, predictions, average="weighted"),
    }
