"""The quality benchmark in quick mode on one small bundled dataset: values, provenance, rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, repo_root):
    from benchmarks.run import main

    out = tmp_path_factory.mktemp("bench")
    main(["--suite", "quality", "--quick", "--datasets", "garnett_pbmc_facs", "--results-dir", str(out / "results"),
          "--leaderboard", str(out / "LEADERBOARD.md"), "--plots-dir", str(out / "plots")])
    return out


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
    assert {r["setting"] for r in rows} == {"zero-shot", "supervised reference", "linear probe"}
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
    assert f"| garnett_pbmc_facs | majority class | {majority['n_train']} | {majority['accuracy']:.3f} |" in first
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "few_shot.png", "quality_macro_f1.png", "zero_shot_alpha.png"]
