"""The ``data`` suite: the loader-vs-model benchmark, data_path.json and its leaderboard section."""

from __future__ import annotations

import json

import pytest

TINY_ARGS = {
    "data_path_benchmark": ["--cells", "400,800", "--mean-genes", "6", "--ranks", "1", "--steady-batches", "2",
                            "--batch-size", "8"],
    "loader_vs_model": ["--size", "tiny", "--cells", "200", "--model-batch", "1", "--model-steps", "1",
                        "--loader-batch", "4", "--steady-batches", "2"],
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    pytest.importorskip("matplotlib")
    import benchmarks.run as run

    out = tmp_path_factory.mktemp("data_suite")
    patch = pytest.MonkeyPatch()
    patch.setattr(run, "DATA_ARGS", TINY_ARGS)
    try:
        run.main(["--suite", "data", "--results-dir", str(out / "results"), "--leaderboard",
                  str(out / "LEADERBOARD.md"), "--plots-dir", str(out / "plots")])
    finally:
        patch.undo()
    return json.loads((out / "results" / "data_path.json").read_text()), (out / "LEADERBOARD.md").read_text()


@pytest.mark.slow  # ranks in fresh processes, a model step: ~1-4 min on a loaded 2-core machine
def test_data_path_json_is_stamped_and_complete(suite):
    data, _ = suite
    assert data["suite"] == "data" and {"commit", "machine", "created", "wall_s"} <= set(data)
    bench = data["data_path_benchmark"]
    assert "error" not in bench, bench.get("error")
    assert [(row["cells"], row["ranks"]) for row in bench["rows"]] == [(400, 1), (800, 1)]
    fits = {fit["column"]: fit for fit in bench["fits"]}
    rows = bench["rows"]
    slope = (rows[1]["setup_s"] - rows[0]["setup_s"]) / 400  # two sizes: the line through both
    assert fits["setup_s"]["extrapolated"] == pytest.approx(rows[0]["setup_s"] + slope * (27_500_000 - 400))


@pytest.mark.slow  # ranks in fresh processes, a model step: ~1-4 min on a loaded 2-core machine
def test_loader_against_model_ratio_is_the_rows(suite):
    data, _ = suite
    ratio = data["loader_vs_model"]
    assert "error" not in ratio, ratio.get("error")
    model = [row for row in ratio["rows"] if row["side"] == "model"]
    loader = [row for row in ratio["rows"] if row["side"] == "loader"]
    assert [row["workers"] for row in loader] == [0, 2] and model[0]["threads"] == 1
    assert all(row["cells_per_s"] > 0 and row["tokens_per_s"] >= 200 * row["cells_per_s"] for row in ratio["rows"])
    assert loader[0]["cells"] == 2 * 4 and model[0]["cells"] == 1  # steady batches / timed steps
    expected = min(r["cells_per_s"] for r in loader) / max(r["cells_per_s"] for r in model)
    assert ratio["ratio_min"] == pytest.approx(expected)
    assert ratio["meets_target"] == (expected >= 10)


@pytest.mark.slow  # ranks in fresh processes, a model step: ~1-4 min on a loaded 2-core machine
def test_leaderboard_shows_the_data_path(suite):
    data, text = suite
    assert "## Data path at corpus scale" in text and "- data path: commit" in text
    for fit in data["data_path_benchmark"]["fits"]:
        assert f"| {fit['column']} |" in text and f"{fit['extrapolated']:.2f}" in text
    assert f"{data['loader_vs_model']['ratio_min']:,.1f}×" in text


def test_renderer_on_given_results():
    from benchmarks.leaderboard import render

    rows = [{"cells": n, "ranks": 1, "open_s": 0.01, "setup_s": s, "setup_peak_mb": m, "held_mb": m / 2,
             "hwm_mb": m, "first_batch_s_w0": 0.1, "cells_per_s_w0": 5000.0, "tokens_per_s_w0": 2e5}
            for n, s, m in ((1_000_000, 0.5, 30.0), (3_000_000, 1.5, 90.0))]
    fits = [{"ranks": 1, "column": "setup_s", "per_million_cells": 0.5, "intercept": 0.0, "extrapolated": 13.75,
             "target": 30.0, "meets_target": True},
            {"ranks": 1, "column": "setup_peak_mb", "per_million_cells": 30.0, "intercept": 0.0,
             "extrapolated": 825.0, "target": 2048.0, "meets_target": True}]
    ratio = {"argv": "python -m benchmarks.loader_vs_model", "seconds": 60.0,
             "settings": {"size": "official", "precision": "fp32", "model_batch": 2, "loader_batch": 8,
                          "corpus_cells": 20000, "lengths": "log-normal"},
             "rows": [{"side": "model", "setting": "1 thread", "cells": 2, "cells_per_s": 0.25, "tokens_per_s": 190.0},
                      {"side": "loader", "setting": "0 workers", "cells": 160, "cells_per_s": 80.0,
                       "tokens_per_s": 6e4}],
             "ratio_min": 320.0, "ratio_min_between": ["0 workers", "1 thread"], "target": 10.0, "meets_target": True}
    data = {"commit": "abc", "created": "now", "machine": {"platform": "linux", "cpu_count": 2, "torch": "2"},
            "wall_s": 600.0, "data_path_benchmark": {"argv": "python -m benchmarks.data_path_benchmark",
                                                     "seconds": 500.0, "settings": {"genes_per_cell": [20, 60]},
                                                     "rows": rows, "fits": fits},
            "loader_vs_model": ratio}
    text = render(None, None, data)
    assert "| 1 | setup_s | 0.5 | 0 | 13.75 | 30 | yes |" in text
    assert "| 1 | setup_peak_mb | 30 | 0 | 825.00 | 2048 | yes |" in text
    assert "| 3,000,000 | 1 | 0.01 | 1.5 | 90 | 45 |" in text
    assert "**320.0×** (target ≥ 10×: met)" in text
    assert "Data path" not in render(None, None, None)
