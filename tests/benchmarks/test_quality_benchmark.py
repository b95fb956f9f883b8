"""The quality benchmark in quick mode on one small bundled dataset: values, provenance, rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results" / "quality.json").read_text())


def test_provenance_and_splits(quick_run):
    results = _results(quick_run)
    assert len(results["commit"].split("-")[0]) == 40 or results["commit"] == "unknown"
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch"]
    assert results["seeds"]["split"] == 0 and results["seeds"]["few_shot"] == [0, 1]
    info = results["datasets"]["garnett_pbmc_facs"]
    split = info["split"]
    assert info["n_cells"] == 300 and split["n_train"] + split["n_test"] == 300
    assert split["n_test"] == 60 and len(split["test_positions"]) == 60
    assert info["classes"] == ["B cells", "CD4 T cells", "CD8 T cells"]
    summary = results["splits"]["garnett_pbmc_facs"]
    assert summary["n_test"] == 60 and "seed=0" in summary["how"]


def test_majority_accuracy_is_largest_class_fraction(quick_run):
    results = _results(quick_run)
    truth = np.array(results["datasets"]["garnett_pbmc_facs"]["test_truth"])
    largest = np.bincount(truth).max() / truth.size
    row = next(r for r in results["rows"] if r["method"] == "majority class")
    assert row["accuracy"] == pytest.approx(largest, abs=1e-4)
    assert largest == pytest.approx(0.5)  # 30 of 60 test cells are B cells (400 of 800 overall)


def test_metrics_recomputed_from_saved_predictions(quick_run):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    results = _results(quick_run)
    truth = np.array(results["datasets"]["garnett_pbmc_facs"]["test_truth"])
    rows = [r for r in results["rows"] if "predictions" in r]
    assert {r["setting"] for r in rows} == {"zero-shot", "supervised reference", "linear probe", "fine-tune",
                                            "reverse zero-shot"}
    for row in rows:
        preds = np.array(row["predictions"])
        assert row["accuracy"] == pytest.approx(accuracy_score(truth, preds), abs=1e-4)
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, preds), abs=1e-4)
        assert row["macro_f1"] == pytest.approx(f1_score(truth, preds, average="macro"), abs=1e-4)
        assert row["weighted_f1"] == pytest.approx(f1_score(truth, preds, average="weighted"), abs=1e-4)


def test_few_shot_rows_are_seed_means(quick_run):
    rows = [r for r in _results(quick_run)["rows"] if r["setting"] == "few-shot"]
    assert [r["k"] for r in rows] == [1, 5]
    for row in rows:
        assert row["n_train"] == 3 * row["k"]  # k cells for each of the 3 classes
        values = [run["macro_f1"] for run in row["per_seed"]]
        assert row["macro_f1"] == pytest.approx(np.mean(values), abs=1e-4)
        assert row["macro_f1_sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)


def test_leaderboard_regenerated_from_json_alone(quick_run, tmp_path):
    from benchmarks.run import regenerate

    first = (quick_run / "LEADERBOARD.md").read_text()
    again = regenerate(quick_run / "results", tmp_path / "LEADERBOARD.md", tmp_path / "plots")
    assert again == first == (tmp_path / "LEADERBOARD.md").read_text()
    results = _results(quick_run)
    majority = next(r for r in results["rows"] if r["method"] == "majority class")
    assert (f"| garnett_pbmc_facs | never seen | majority class | {majority['n_train']} | {majority['accuracy']:.3f} |"
            in first)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "few_shot.png", "few_shot_langcell.png", "quality_macro_f1.png", "zero_shot_alpha.png"]


def test_embedding_rows_in_results_and_leaderboard(quick_run):
    results = json.loads((quick_run / "results/quality.json").read_text())
    rows = [r for r in results["rows"] if r["setting"] == "embedding" and r["dataset"] == "garnett_pbmc_facs"]
    assert {r["method"].split(" (")[0] for r in rows} == {"X_langcell", "PCA-50 of log1p CP10k"}
    ours = next(r for r in rows if r["method"].startswith("X_langcell"))
    assert ours["n_test"] == results["datasets"]["garnett_pbmc_facs"]["split"]["n_test"] and ours["n_texts"] == 3
    assert -1 <= ours["silhouette_label"] <= 1 and 0 <= ours["knn_purity"] <= 1
    assert 0 <= ours["cell_to_text_recall_at_1"] <= 1
    assert "cell_to_text_recall_at_5" not in ours  # 3 texts: recall@5 is 1 by construction, not reported
    assert "Embeddings and retrieval" in (quick_run / "LEADERBOARD.md").read_text()


def test_embedding_rows_score_a_known_geometry(repo_root):
    """Two tight, opposite clusters: purity 1 and silhouette ~1 for the embedding; retrieval is
    scored against the real class texts of the labels with the shipped checkpoint."""
    import anndata
    import pandas as pd

    from benchmarks.embedding_quality import dataset_embedding_rows
    from benchmarks.quality import Dataset
    from lightning_langcell.inference.annotate import load_zero_shot_model

    rng = np.random.default_rng(0)
    labels = np.array(["B cell", "T cell"] * 40, dtype=object)  # 20 per class in the test half: k = 15 fits
    direction = rng.normal(size=256)
    embeddings = np.where((labels == "B cell")[:, None], 1.0, -1.0) * direction + 0.01 * rng.normal(size=(80, 256))
    obs = pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(80)])
    data = Dataset("toy", repo_root, "unseen", anndata.AnnData(obs=obs), labels, np.arange(40),
                   np.arange(40, 80), "toy split", ["B cell", "T cell"])
    expression = rng.poisson(1.0, size=(80, 30)).astype(np.float32)
    model, tokenizer, _ = load_zero_shot_model(str(repo_root / "checkpoints/langcell-tiny-bundled"))
    ours, pca = dataset_embedding_rows(data, embeddings, expression, model, tokenizer, "cell_type", "toy")
    assert ours["knn_purity"] == 1.0 and ours["silhouette_label"] > 0.99
    assert ours["n_test"] == 40 and ours["n_texts"] == 2 and "cell_to_text_recall_at_5" not in ours
    assert pca["method"].startswith("PCA-50") and pca["knn_purity"] < 0.9  # Poisson noise has no label structure


def test_speed_scaling_tables_and_plot(tmp_path):
    """Scaling lists returned by the speed benchmarks become tables and one multi-panel plot."""
    from benchmarks.leaderboard import plot, render, scaling_panels

    speed = {"commit": "c", "created": "now", "machine": {"platform": "p", "cpu_count": 2, "torch": "t"},
             "benchmarks": {
                 "tokenizer_benchmark": {"argv": "a", "seconds": 1.0, "rows": [{"case": "ours", "ratio": 4.0}],
                                         "scaling": {"scaling": [{"case": "ours", "cells": 100, "cells_per_s": 50.0},
                                                                 {"case": "ours", "cells": 200, "cells_per_s": 60.0}]}},
                 "zero_shot_benchmark": {"argv": "b", "seconds": 1.0, "rows": [{"case": "ours exact", "ratio": 2.0}],
                                         "scaling": {"class_scaling": [
                                             {"case": "official", "classes": 2, "cpu_s": 4.0},
                                             {"case": "ours exact", "classes": 2, "cpu_s": 2.0}]}}}}
    panels = scaling_panels(speed)
    assert [(title.split(":")[0], lines) for title, _, _, lines in panels] == [
        ("tokenizer", {"ours": [(100, 50.0), (200, 60.0)]}),
        ("zero-shot", {"official": [(2, 4.0)], "ours exact": [(2, 2.0)]})]
    text = render(None, speed)
    assert "| case | cells | cells_per_s |" in text and "class scaling:" in text and "speed_scaling.png" in text
    assert {p.name for p in plot(None, speed, tmp_path)} == {"speed.png", "speed_scaling.png"}
