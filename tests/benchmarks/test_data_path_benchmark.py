"""The data-path benchmark at a tiny size: every row counted right, rates positive, the fits recomputable."""

from __future__ import annotations

import os

import numpy as np
import pytest

SIZES = (2000,)  # one size keeps the run short: the two-size fit is checked on given rows


@pytest.fixture(scope="module")
def returned():
    from benchmarks.data_path_benchmark import main

    before = os.environ.get("LANGCELL_CACHE")
    result = main(["--cells", ",".join(map(str, SIZES)), "--mean-genes", "10", "--steady-batches", "5",
                   "--batch-size", "16", "--ranks", "1,2"])
    assert os.environ.get("LANGCELL_CACHE") == before  # the run's temporary cache is not left set
    return result


def test_rows_count_cells_tokens_and_splits(returned):
    rows = returned["rows"]
    assert [(row["cells"], row["ranks"]) for row in rows] == [(n, r) for n in SIZES for r in (1, 2)]
    for row in rows:
        n = row["cells"]
        assert 5 * n <= row["tokens"] <= 15 * n  # 5-15 genes per cell
        assert row["train_cells"] + row["val_cells"] == n  # split 0.9 / 0.1 / 0: every cell once
        assert row["train_cells"] == pytest.approx(0.9 * n, abs=30)  # stratified over 30 cell types
        assert row["open_s"] > 0 and row["setup_s"] > 0 and row["digest_s"] > 0
        assert row["setup_peak_mb"] >= row["held_mb"] - 1e-6 and row["hwm_mb"] > 0
        workers = (0, 2) if row["ranks"] == 1 else (0,)
        for w in workers:
            assert row[f"steady_cells_w{w}"] == 5 * 16  # 5 full batches of 16 cells
            assert row[f"cells_per_s_w{w}"] > 0 and row[f"tokens_per_s_w{w}"] > row[f"cells_per_s_w{w}"]
            assert row[f"first_batch_s_w{w}"] > 0
        if row["ranks"] == 2:
            assert "cells_per_s_w2" not in row


def test_extrapolation_is_the_linear_fit_of_the_rows(returned):
    from benchmarks.data_path_benchmark import FITTED, TARGET_CELLS, TARGETS

    fits = {(fit["ranks"], fit["column"]): fit for fit in returned["fits"]}
    assert set(fits) == {(r, c) for r in (1, 2) for c in FITTED}
    for (ranks, column), fit in fits.items():
        (row,) = [row for row in returned["rows"] if row["ranks"] == ranks]
        slope, intercept = row[column] / row["cells"], 0.0  # one size: through the origin
        assert fit["extrapolated"] == pytest.approx(slope * TARGET_CELLS + intercept, rel=1e-9, abs=1e-9)
        assert fit["per_million_cells"] == pytest.approx(slope * 1e6, rel=1e-9, abs=1e-12)
        assert fit["target"] == TARGETS.get(column)
        if fit["target"] is not None:
            assert fit["meets_target"] == (fit["extrapolated"] <= fit["target"])


def test_several_sizes_are_fitted_by_least_squares():
    from benchmarks.data_path_benchmark import FITTED, TARGET_CELLS, extrapolate

    cells = [1_000_000, 3_000_000, 10_000_000]
    rows = [{"cells": n, "ranks": 1, **{c: 1.0 + 2e-6 * n + 0.1 * k + 0.01 * i for i, c in enumerate(FITTED)}}
            for k, n in enumerate(cells)]
    for fit in extrapolate(rows):
        values = [row[fit["column"]] for row in rows]
        slope, intercept = np.polyfit(cells, values, 1)
        assert fit["extrapolated"] == pytest.approx(slope * TARGET_CELLS + intercept, rel=1e-9)
        assert fit["intercept"] == pytest.approx(intercept, rel=1e-9)
    setup = next(fit for fit in extrapolate(rows[:1]) if fit["column"] == "setup_s")  # one size: through 0
    assert setup["intercept"] == 0.0 and setup["extrapolated"] == pytest.approx(rows[0]["setup_s"] * 27.5)
