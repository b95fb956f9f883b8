"""The quality suite's annotation rows (few-shot adapters, open-set AUROC, ontology hierarchy):
their leaderboard sections from a hand-made results dict, the hierarchy row on hand-made
predictions, and the keys a quick run writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.leaderboard import annotation_section

SEEN_LABEL = "labels seen, cells held out"


def _quality() -> dict:
    adapter = {"dataset": "pbmc3k", "k": 5, "method": "probe adapter", "n_train": 40, "n_test": 528,
               "accuracy": 0.8123, "accuracy_sd": 0.0211, "balanced_accuracy": 0.7012, "balanced_accuracy_sd": 0.0305,
               "macro_f1": 0.6543, "macro_f1_sd": 0.0123}
    return {
        "checkpoint": {"name": "langcell-tiny-bundled", "training_datasets": ["pbmc68k_reduced"]},
        "datasets": {"pbmc68k_reduced": {"role": "labels seen in pre-training (held-out cells)"},
                     "pbmc3k": {"role": "never seen (cells and labels)"}},
        "few_shot_adapters": {"ks": [5], "seeds": [0, 1], "alpha": 0.1, "rows": [adapter]},
        "open_set": {"max_cells": 300, "rows": [
            {"dataset": "pbmc3k", "n_cells": 300, "n_types": 8, "auroc_entropy": 0.5432, "auroc_entropy_sd": 0.0222,
             "auroc_margin": 0.6789, "auroc_margin_sd": 0.1111,
             "auroc_max_probability": 0.6543, "auroc_max_probability_sd": 0.0987}]},
        "hierarchy": {"alpha": 0.1, "rows": [  # the pre-training row first: the section must reorder
            {"dataset": "pbmc68k_reduced", "method": "zero-shot α=0.1", "n_test": 70, "accuracy": 0.4321,
             "hierarchical_f1": 0.7654, "correct_or_ancestor": 0.4444},
            {"dataset": "pbmc3k", "method": "zero-shot α=0.1", "n_test": 528, "accuracy": 0.1234,
             "hierarchical_f1": 0.5678, "correct_or_ancestor": 0.2345}]},
        "hierarchy_thresholds": {"chosen": {"threshold": 0.15, "ancestor_threshold": 0.6}, "criterion": "best hF1",
                                 "grid_size": 71, "rows": [
            {"dataset": "pbmc68k_reduced", "method": "no back-off", "accuracy": 0.4321, "hierarchical_f1": 0.7654,
             "correct_or_ancestor": 0.4444, "backoff_fraction": 0.0},
            {"dataset": "pbmc68k_reduced", "method": "back-off at the chosen thresholds", "accuracy": 0.4,
             "hierarchical_f1": 0.7777, "correct_or_ancestor": 0.5556, "backoff_fraction": 0.125}]}}


def _table_after(lines: list[str], heading: str) -> list[str]:
    """The table rows (header and rule left out) of the first table after ``heading``."""
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows[2:]


def test_adapter_and_open_set_sections_show_mean_and_sd():
    lines = annotation_section(_quality())
    adapters = _table_after(lines, "### Few-shot adapters (frozen model)")
    assert adapters == ["| pbmc3k | never seen | 5 | probe adapter | 40 | 528 | 0.812 ± 0.021 | 0.701 ± 0.030 | "
                        "0.654 ± 0.012 |"]
    assert "mean ± sd over seeds [0, 1]" in "\n".join(lines)
    open_set = _table_after(lines, "### Open-set: unknown score AUROC")
    assert open_set == ["| pbmc3k | never seen | 300 | 8 | 0.543 ± 0.022 | 0.679 ± 0.111 | 0.654 ± 0.099 |"]
    description = lines[lines.index("### Open-set: unknown score AUROC") + 2]
    assert "left out of the candidate classes" in description and "at most 300" in description


def test_hierarchy_section_puts_never_seen_first_and_marks_pretraining_rows():
    lines = annotation_section(_quality())
    rows = _table_after(lines, "### Ontology hierarchy")
    assert rows == ["| pbmc3k | never seen | zero-shot α=0.1 | 0.123 | 0.568 | 0.234 | 528 |",
                    f"| pbmc68k_reduced | {SEEN_LABEL} | zero-shot α=0.1 | 0.432 | 0.765 | 0.444 | 70 |"]
    heading = next(line for line in lines if line.startswith("#### Back-off thresholds"))
    assert "labels seen in pre-training" in heading and "never seen" not in heading.lower()
    thresholds = _table_after(lines, heading)
    assert [row.split(" | ")[1] for row in thresholds] == [SEEN_LABEL, SEEN_LABEL]
    assert thresholds[1].endswith("| back-off at the chosen thresholds | 0.400 | 0.778 | 0.556 | 0.125 |")
    assert "threshold 0.15, ancestor threshold 0.6" in "\n".join(lines)


def test_sections_absent_without_their_keys_and_skip_note_shown():
    quality = _quality()
    for key in ("few_shot_adapters", "open_set", "hierarchy"):
        quality.pop(key)
    quality["hierarchy_thresholds"] = {"skipped": "quick mode", "rows": []}
    assert annotation_section(quality) == []
    quality["hierarchy"] = {"rows": _quality()["hierarchy"]["rows"]}
    assert "Back-off thresholds: quick mode." in annotation_section(quality)


def test_hierarchy_row_maps_labels_to_term_ids():
    import anndata

    from benchmarks.annotation_quality import hierarchy_row
    from benchmarks.quality import Dataset

    labels = np.array(["B", "CD4 T", "CD8 T", "CD4 T"])
    ids = ["CL:0000236", "CL:0000624", "CL:0000625", "CL:0000624"]
    adata = anndata.AnnData(np.zeros((4, 1), dtype=np.float32))
    adata.obs["cell_type"] = labels
    adata.obs["cell_type_ontology_term_id"] = ids
    data = Dataset("toy", None, "unseen", adata, labels, np.array([0]), np.array([1, 2, 3]), "", sorted(set(labels)))
    # test cells: CD4 T -> CD4 T (right), CD8 T -> CD4 T (sibling), CD4 T -> B (wrong lineage)
    row = hierarchy_row(data, np.array(["CD4 T", "CD4 T", "B"]), "toy method")
    assert row["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert row["correct_or_ancestor"] == pytest.approx(1 / 3, abs=1e-4)
    assert row["n_test"] == 3 and row["n_evaluated"] == 3 and row["method"] == "toy method"
    assert 1 / 3 < row["hierarchical_f1"] < 1  # the sibling keeps the shared T-cell ancestors


def test_quick_run_writes_the_annotation_keys(quick_run):
    results = json.loads((quick_run / "results/quality.json").read_text())
    adapters = results["few_shot_adapters"]["rows"]
    assert {(r["k"], r["method"]) for r in adapters} >= {(1, "probe adapter"), (5, "prototype adapter")}
    assert all(r["dataset"] == "garnett_pbmc_facs" and len(r["per_seed"]) == 2 for r in adapters)
    zero_shot = next(r for r in results["rows"] if r["setting"] == "zero-shot" and r["alpha"] == 0.1)
    adapter_zero_shot = next(r for r in adapters if r["method"].startswith("zero-shot") and r["k"] == 1)
    assert adapter_zero_shot["accuracy"] == pytest.approx(zero_shot["accuracy"], abs=1e-4)  # same cells, same α
    open_set = results["open_set"]["rows"]
    assert [r["n_types"] for r in open_set] == [3] and 0 <= open_set[0]["auroc_margin"] <= 1
    hierarchy = results["hierarchy"]["rows"]
    assert hierarchy[0]["accuracy"] == pytest.approx(zero_shot["accuracy"], abs=1e-4)
    assert "skipped" in results["hierarchy_thresholds"]
    assert results["timings"]["garnett_pbmc_facs"]["annotation_s"] > 0
    scaling = results["class_scaling"]["rows"]
    assert [(r["classes"], r["mode"]) for r in scaling] == [(c, m) for c in (10, 100, 1000, 3221)
                                                           for m in ("exact", "top-5", "top-25")]
    assert all(0 <= r["accuracy"] <= r["correct_or_ancestor"] <= 1 for r in scaling)
    text = (quick_run / "LEADERBOARD.md").read_text()
    for heading in ("### Few-shot adapters (frozen model)", "### Open-set: unknown score AUROC",
                    "### Ontology hierarchy", "### Zero-shot at ontology scale: quality, never seen"):
        assert heading in text


@pytest.fixture
def toy_scores(monkeypatch):
    """dataset_scores of benchmarks.hierarchy_thresholds replaced by hand-made probabilities."""
    import benchmarks.hierarchy_thresholds as thresholds
    from lightning_langcell.inference.hierarchy import ClassHierarchy
    from lightning_langcell.text.ontology import Ontology, OntologyTerm

    ontology = Ontology({"CL": [
        OntologyTerm("CL:0", "cell"), OntologyTerm("CL:1", "leukocyte", parents=("CL:0",)),
        OntologyTerm("CL:2", "T cell", parents=("CL:1",)), OntologyTerm("CL:3", "CD4 T", parents=("CL:2",)),
        OntologyTerm("CL:4", "CD8 T", parents=("CL:2",)), OntologyTerm("CL:5", "B cell", parents=("CL:1",))]})
    hierarchy = ClassHierarchy(["CL:3", "CL:4", "CL:5"], ontology)
    scores = {}
    monkeypatch.setattr(thresholds, "dataset_scores", lambda name, cells: (scores[name], ["CL:3", "CL:3"], hierarchy))
    return scores


def test_threshold_rows_compare_no_back_off_with_the_chosen_pair(toy_scores):
    from benchmarks.annotation_quality import threshold_rows

    # the second CD4 T cell is unsure and wrong (CD8 T 0.45), its T-cell ancestor sums to 0.75
    toy_scores["toy"] = np.array([[0.5, 0.3, 0.2], [0.3, 0.45, 0.25]])
    result = threshold_rows({"toy": None}, ["toy"])
    assert result["chosen"]["threshold"] > 0
    rows = {row["method"]: row for row in result["rows"]}
    assert rows["no back-off"]["hierarchical_f1"] == pytest.approx(5 / 6, abs=1e-4)
    assert rows["back-off at the chosen thresholds"]["hierarchical_f1"] == pytest.approx(10 / 11, abs=1e-4)
    assert rows["back-off at the chosen thresholds"]["correct_or_ancestor"] == 1.0


def test_threshold_rows_show_one_set_when_no_back_off_wins(toy_scores):
    from benchmarks.annotation_quality import threshold_rows

    toy_scores["toy"] = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])  # both sure and right
    result = threshold_rows({"toy": None}, ["toy"])
    assert result["chosen"]["threshold"] == 0.0
    assert [row["method"] for row in result["rows"]] == ["no back-off"]
    assert result["rows"][0]["accuracy"] == 1.0


def test_label_term_ids_without_an_id_column_use_the_ontology_names():
    import anndata

    from benchmarks.annotation_quality import label_term_ids
    from benchmarks.quality import Dataset

    labels = np.array(["B cell", "T cell", "B cell"])
    adata = anndata.AnnData(np.zeros((3, 1), dtype=np.float32))
    adata.obs["cell_type"] = labels  # like ACTINN mouse blood: no cell_type_ontology_term_id
    data = Dataset("toy", None, "unseen", adata, labels, np.array([0]), np.array([1, 2]), "", ["B cell", "T cell"])
    assert label_term_ids(data) == {"B cell": "CL:0000236", "T cell": "CL:0000084"}
