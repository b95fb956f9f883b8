"""Zero-shot at ontology scale: the offline top-k rule of ``benchmarks.class_scaling_quality`` on
hand-made scores, and the leaderboard's speed and quality tables from hand-made results."""

from __future__ import annotations

import numpy as np

from benchmarks.class_scaling_quality import candidates_at, scaling_rows, subset_predictions
from benchmarks.leaderboard import ontology_quality_lines, ontology_speed_lines


def _scores(seed: int = 0, cells: int = 40, classes: int = 12):
    generator = np.random.default_rng(seed)
    ctc = generator.dirichlet(np.ones(classes), size=cells)
    return ctc, generator.uniform(size=(cells, classes))


def test_top_k_with_every_class_is_exact_mode():
    ctc, match = _scores()
    columns = np.arange(9)
    exact = subset_predictions(ctc, match, columns, None)
    np.testing.assert_array_equal(subset_predictions(ctc, match, columns, 9), exact)
    # exact mode by hand: 0.1 * renormalised CTC + 0.9 * softmax over the match probabilities
    sub = ctc[:, :9] / ctc[:, :9].sum(1, keepdims=True)
    ctm = np.exp(match[:, :9]) / np.exp(match[:, :9]).sum(1, keepdims=True)
    np.testing.assert_array_equal(exact, (0.1 * sub + 0.9 * ctm).argmax(1))


def test_top_1_is_the_ctc_argmax_and_top_k_stays_among_candidates():
    ctc, match = _scores(1)
    columns = np.arange(12)
    np.testing.assert_array_equal(subset_predictions(ctc, match, columns, 1), ctc.argmax(1))
    top3 = np.argsort(-ctc, axis=1)[:, :3]
    predicted = subset_predictions(ctc, match, columns, 3)
    assert all(p in row for p, row in zip(predicted, top3))


def test_scaling_rows_score_exact_and_top_k_per_count():
    # 2 cells of CL:0000236 (B cell), classes: B cell, T cell, monocyte; cell 0 matches B, cell 1 T
    order = ["CL:0000236", "CL:0000084", "CL:0000576"]
    ctc = np.array([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]])
    match = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rows = scaling_rows("toy", ["CL:0000236", "CL:0000236"], ctc, match, order, counts=("2", "all"), ks=(1,))
    by = {(r["classes"], r["mode"]): r for r in rows}
    assert by[(3, "exact")]["accuracy"] == 0.5 and by[(3, "exact")]["balanced_accuracy"] == 0.5
    assert by[(3, "top-1")]["accuracy"] == 0.0  # the CTC argmax is T cell for both
    assert by[(2, "exact")]["n_cells"] == 2 and by[(3, "exact")]["correct_or_ancestor"] == 0.5
    assert 0.0 < by[(3, "top-1")]["hierarchical_f1"] < by[(3, "exact")]["hierarchical_f1"] < 1.0


def test_candidates_keep_the_true_classes_first():
    truth = ["CL:0000236", "CL:0000576"]
    ten = candidates_at("10", truth)
    assert ten[:2] == truth and len(ten) == len(set(ten)) == 10
    every = candidates_at("all", truth)
    assert len(every) >= 3221 and every[:10] == ten


def _speed_bench() -> dict:
    rows = [{"classes": 10, "official_s_per_cell": 4.0, "official_measured": True, "ours_s_per_cell": 2.0,
             "speedup": 2.0, "text_one_off_s": 0.5, "text_measured": True, "stand_in_embeddings": 0},
            {"classes": 1000, "official_s_per_cell": 301.0, "official_measured": False, "ours_s_per_cell": 2.5,
             "speedup": 120.4, "text_one_off_s": 40.0, "text_measured": False, "stand_in_embeddings": 936}]
    return {"rows": rows, "ontology_scaling": {"official_measured_s_per_cell": {"1": 1.3, "10": 4.0}, "cells": 1,
                                               "k": 5, "official_fit_fixed_s": 1.0, "official_fit_s_per_class": 0.3}}


def test_speed_table_marks_fitted_rows():
    lines = ontology_speed_lines(_speed_bench())
    assert lines[0] == "#### Zero-shot at ontology scale: speed"
    assert "measured at 1, 10 class(es) only and fitted as 1.00 + 0.300 × classes" in lines[2]
    assert lines[-2:] == ["| 10 | 4.00 | 2.00 | 2.0 | 0.5 |",
                          "| 1000 | 301.00 (fitted) | 2.50 | 120.4 (fitted) | 40.0 (fitted) |"]


def test_quality_table_from_results():
    quality = {"class_scaling": {"max_cells": 60, "alpha": 0.1, "rows": [
        {"dataset": "pbmc3k", "classes": 100, "mode": "top-5", "k": 5, "n_cells": 60, "accuracy": 0.1234,
         "balanced_accuracy": 0.0987, "hierarchical_f1": 0.4567, "correct_or_ancestor": 0.2}]}}
    lines = ontology_quality_lines(quality)
    assert lines[1] == "### Zero-shot at ontology scale: quality, never seen"
    assert "At most 60 test cells" in lines[3]
    assert lines[-1] == "| pbmc3k | 100 | top-5 | 60 | 0.123 | 0.099 | 0.457 | 0.200 |"
    assert ontology_quality_lines({}) == []


def test_speed_suite_entry_keeps_the_table_and_renders_it(monkeypatch):
    import benchmarks.run as run
    from benchmarks.leaderboard import speed_section

    argv = ["--ontology-scaling", "4,10", "--official-max-classes", "4", "--text-sample", "5", "--genes", "30",
            "--threads", "1", "--ontology-k", "3"]
    monkeypatch.setattr(run, "SPEED_ARGS", {"ontology_scaling_benchmark": argv})
    entry = run.run_speed(quick=True, log=lambda _: None)["benchmarks"]["ontology_scaling_benchmark"]
    assert "error" not in entry and [row["classes"] for row in entry["rows"]] == [4, 10]
    assert [row["official_measured"] for row in entry["rows"]] == [True, False]
    assert sorted(entry["ontology_scaling"]["official_measured_s_per_cell"]) == ["1", "4"]
    lines = speed_section({"benchmarks": {"ontology_scaling_benchmark": entry}})
    assert "#### Zero-shot at ontology scale: speed" in lines
    assert any(line.startswith("| 10 | ") and line.count("(fitted)") >= 2 for line in lines)
