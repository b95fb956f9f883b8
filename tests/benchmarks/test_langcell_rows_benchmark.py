"""Quality-suite rows that train LangCell (few-shot, fine-tune, reverse pre-training), in quick mode."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def results(quick_run) -> dict:
    return json.loads((quick_run / "results" / "quality.json").read_text())


def _scores(truth: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {"accuracy": accuracy_score(truth, preds), "balanced_accuracy": balanced_accuracy_score(truth, preds),
            "macro_f1": f1_score(truth, preds, average="macro"),
            "weighted_f1": f1_score(truth, preds, average="weighted")}


def test_few_shot_langcell_is_paired_with_logistic_regression(results):
    info = results["datasets"]["garnett_pbmc_facs"]
    test = set(info["split"]["test_positions"])
    langcell = [r for r in results["rows"] if r["setting"] == "few-shot LangCell"]
    lr = {r["k"]: r for r in results["rows"] if r["setting"] == "few-shot"}
    assert [r["k"] for r in langcell] == [1, 5] and [r["seeds"] for r in langcell] == [[0, 1], [0, 1]]
    for row in langcell:
        paired = lr[row["k"]]
        assert row["n_test"] == paired["n_test"] == 60
        for ours, theirs in zip(row["per_seed"], paired["per_seed"]):
            assert ours["seed"] == theirs["seed"]
            assert ours["train_positions"] == theirs["train_positions"]  # the same k cells per class
            assert len(ours["train_positions"]) == 3 * row["k"] and not test & set(ours["train_positions"])
            assert len(ours["predictions"]) == len(theirs["predictions"]) == 60  # the same test cells
            assert ours["steps"] == row["epochs"] * math.ceil(3 * row["k"] / 12)  # batch 12
            assert ours["macro_f1_minus_paired"] == pytest.approx(ours["macro_f1"] - theirs["macro_f1"], abs=2e-4)
        deltas = [run["macro_f1_minus_paired"] for run in row["per_seed"]]
        assert row["macro_f1_minus_paired"] == pytest.approx(np.mean(deltas), abs=1e-4)
        assert row["macro_f1_minus_paired_sd"] == pytest.approx(np.std(deltas, ddof=1), abs=1e-4)
        assert row["macro_f1"] == pytest.approx(np.mean([run["macro_f1"] for run in row["per_seed"]]), abs=1e-4)


def test_per_seed_metrics_recomputed_from_predictions(results):
    truth = np.array(results["datasets"]["garnett_pbmc_facs"]["test_truth"])
    runs = [run for r in results["rows"] if r["setting"] in ("few-shot", "few-shot LangCell") for run in r["per_seed"]]
    assert len(runs) == 8
    for run in runs:
        for name, value in _scores(truth, np.array(run["predictions"])).items():
            assert run[name] == pytest.approx(value, abs=1e-4)


def test_reduced_settings_are_recorded(results, quick_run):
    config = results["config"]
    assert config["langcell_few_shot"] == {"epochs": 1} and config["fine_tune"] == {"epochs": 1, "learning_rates": [1e-3]}
    assert config["reverse_pretrain"] == {"max_epochs": 1, "max_steps": 2}
    assert set(config["reduced"]) == {"langcell_few_shot", "fine_tune", "reverse_pretrain"}
    assert all(r["epochs"] == 1 for r in results["rows"] if r["setting"] == "few-shot LangCell")
    fine_tune = next(r for r in results["rows"] if r["setting"] == "fine-tune")
    # 240 train cells / batch 16 = 15 steps; warm-up round(500 · 1/20) = 25, capped at the 15 steps
    settings = (fine_tune["epochs"], fine_tune["recipe_epochs"], fine_tune["steps"], fine_tune["warmup_steps"])
    assert settings == (1, 20, 15, 15)
    assert (fine_tune["learning_rate"], fine_tune["recipe_learning_rate"], fine_tune["features"]) == (1e-3, 5e-5, "pooled")
    assert fine_tune["method"].endswith(", lr 0.001")
    text = (quick_run / "LEADERBOARD.md").read_text()
    assert "for **1 epochs** (recipes/few_shot.yaml trains 10 epochs" in text
    assert "for **1 epochs instead of 20**" in text
    assert set(results["timings"]["garnett_pbmc_facs"]) == {"baselines_s", "annotation_s", "few_shot_langcell_s", "fine_tune_s",
                                                               "prompt_ensembles_s"}


def test_reverse_pretraining_uses_train_split_only(results):
    info = results["reverse_pretraining"]
    split = results["datasets"]["garnett_pbmc_facs"]["split"]
    trained = info["trained_on"]["garnett_pbmc_facs"]
    assert list(info["trained_on"]) == ["garnett_pbmc_facs"] and info["steps"] == 2
    assert trained["cells"] == split["n_train"] == 240
    assert sorted(set(trained["positions"]) | set(split["test_positions"])) == list(range(300))
    assert not set(trained["positions"]) & set(split["test_positions"])
    rows = [r for r in results["rows"] if r["setting"] == "reverse zero-shot"]
    assert [r["alpha"] for r in rows] == [0.1, 1.0] and all(r["seen_in_pretraining"] for r in rows)
    assert rows[0]["method"] == "LangCell zero-shot (tiny, pre-trained on garnett_pbmc_facs train splits)"


def test_untrained_few_shot_model_predicts_like_zero_shot(tmp_path, repo_root):
    """0 epochs of few-shot fine-tuning = the zero-shot annotation of the same test cells (α = 0.1)."""
    from benchmarks import quality
    from benchmarks.few_shot_langcell import fit_few_shot
    from benchmarks.lightning_runs import tokenize_once

    path = repo_root / "data/cells/garnett_pbmc_facs.h5ad"
    data = quality.load_dataset("garnett_pbmc_facs", path, "unseen", 90, None)
    corpus = tokenize_once(data.adata, tmp_path, data.name, "cell_type")
    predicted, steps = fit_few_shot(data, corpus, quality.few_shot_cells(data, 1, 0), 0, 0, tmp_path, {})
    alpha, zero_shot, _, _ = next(quality.zero_shot_predictions(data, str(quality.CHECKPOINT), [0.1]))
    assert steps == 0 and len(predicted) == len(data.test) == 18
    assert predicted.tolist() == zero_shot.tolist()


def test_tied_class_texts_get_the_dataset_label(tmp_path, repo_root):
    import anndata

    from benchmarks.few_shot_langcell import class_text_overrides
    from benchmarks.lightning_runs import tokenize_once

    adata = anndata.read_h5ad(repo_root / "data/cells/zeisel_mouse_brain.h5ad")
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    keep = np.concatenate([np.flatnonzero(labels == name)[:5] for name in sorted(set(labels))])  # 5 cells per class
    corpus = tokenize_once(adata[np.sort(keep)].copy(), tmp_path, "zeisel", "cell_type")
    overrides = class_text_overrides(corpus)
    assert sorted(overrides) == ["Astrocyte1", "Astrocyte2"]  # both CL:0012000
    assert overrides["Astrocyte1"] == "Astrocyte1. An astrocyte of the forebrain."


def test_subset_data_module_refuses_overlapping_cells(tmp_path, repo_root):
    import anndata

    from benchmarks.lightning_runs import SubsetDataModule, tokenize_once

    adata = anndata.read_h5ad(repo_root / "data/cells/garnett_pbmc_facs.h5ad")[:20].copy()
    corpus = tokenize_once(adata, tmp_path, "tiny", "cell_type")
    module = SubsetDataModule(corpus, [0, 1, 2], [2, 3], label_column="cell_type", texts=False)
    with pytest.raises(ValueError, match="overlap"):
        module.setup("fit")
    module = SubsetDataModule(corpus, [5, 1], [7, 3], label_column="cell_type", texts=False)
    module.setup("fit")
    assert module.splits["train"].tolist() == [1, 5] and module.splits["test"].tolist() == [3, 7]
    assert len(module.splits["val"]) == 0 and len(module.predict_dataloader().dataset) == 2


def test_results_json_keeps_number_lists_on_one_line(tmp_path):
    from benchmarks.run import write_json

    data = {"rows": [{"predictions": [0, 2, 1], "metric": 0.5, "names": ["a", "b"], "mixed": [1.5e-05, -2]}]}
    write_json(data, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == data
    assert '"predictions": [0, 2, 1]' in text and '"mixed": [1.5e-05, -2]' in text
