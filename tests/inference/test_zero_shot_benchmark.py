"""The zero-shot speed benchmark on the tiny model: exact mode equals the official loop, and the
class-count and cell-count tables hold what was asked."""

import pytest

from benchmarks.zero_shot_benchmark import main


@pytest.fixture(scope="module")
def results():
    return main(["--quick", "--cells", "2", "--genes", "40", "--classes", "4", "--ks", "1,2", "--threads", "1",
                 "--scaling", "1,2", "--class-scaling", "2,3", "--real-data", ""])


def test_exact_and_full_top_k_match_the_official_loop(results):
    cases = {row["case"]: row for row in results["cases"]}
    assert cases["ours exact"]["agreement"] == 1.0 and cases["ours exact"]["max_abs_diff"] < 1e-5
    assert cases["official (per class)"]["speedup_cpu"] == 1.0
    for row in results["cases"]:
        assert row["peak_mib"] > 0
        assert row["speedup_cpu"] == pytest.approx(cases["official (per class)"]["cpu_s"] / row["cpu_s"])


def test_scaling_tables(results):
    assert [row["cells"] for row in results["scaling"]] == [1, 2]
    assert sorted((row["case"], row["classes"]) for row in results["class_scaling"]) == [
        ("official", 2), ("official", 3), ("ours exact", 2), ("ours exact", 3)]
    assert all(row["cpu_s"] > 0 and row["cells"] == 2 for row in results["class_scaling"])
