"""The pre-training step benchmark on a tiny model: rows, peak memory and the length scaling."""

from __future__ import annotations

import pytest

from benchmarks.pretrain_step_benchmark import main, parse_lengths

TINY = ["--layers", "1", "--hidden", "32", "--heads", "2", "--cells", "8", "--batch-size", "1", "--warmup", "0",
        "--threads", "1", "--gemm-size", "128", "--scaling-steps", "2"]  # ~15 s on 1 CPU thread, ~1.4 GiB peak


@pytest.fixture(scope="module")
def result():
    return main(TINY + ["--lengths", "64,128"])


def test_rows_have_three_cases_with_timings_and_peak_memory(result):
    rows = {row["case"]: row for row in result["rows"]}
    assert list(rows) == ["ours", "grouped_sdpa", "baseline"]
    assert result["cases"] is result["rows"]  # the key benchmarks.run reads
    for row in rows.values():
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] > 0
        assert row["peak_mib"] > 0 and row["peak_source"] == "process_vmhwm"
        assert row["ratio"] == pytest.approx(row["tokens_per_s"] / rows["baseline"]["tokens_per_s"])
    assert rows["baseline"]["ratio"] == 1.0
    # each case's own peak (reset before it): padding every cell to 2048 costs the baseline more memory
    peaks = {row["case"]: row["peak_mib"] for row in result["rows"]}
    assert peaks["baseline"] > peaks["ours"]


def test_length_scaling_times_ours_and_baseline_per_length(result):
    scaling = {(row["case"], row["length"]): row for row in result["scaling"]}
    assert sorted(scaling) == [("baseline", 64), ("baseline", 128), ("ours", 64), ("ours", 128)]
    for (case, length), row in scaling.items():
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0
        assert row["ratio"] == pytest.approx(scaling[("baseline", length)]["step_ms"] / row["step_ms"])
    assert scaling[("baseline", 64)]["ratio"] == 1.0
    # every cell has exactly `length` real tokens: tokens/s x step time = batch (1) x length
    for (case, length), row in scaling.items():
        assert row["tokens_per_s"] * row["step_ms"] / 1000 == pytest.approx(length, rel=0.05)


def test_lengths_off_by_default_and_validated():
    assert parse_lengths("") == [] and parse_lengths("64, 128") == [64, 128]
    with pytest.raises(SystemExit):
        main(TINY + ["--lengths", "4096"])
