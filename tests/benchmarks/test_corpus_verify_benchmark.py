"""The corpus-verify speed benchmark on a tiny corpus: every case, its values, the leaderboard rows."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def returned():
    from benchmarks.corpus_verify_benchmark import main

    before = os.environ.get("LANGCELL_CACHE")
    result = main(["--cells", "300", "--mean-length", "50", "--repeat", "2"])
    assert os.environ.get("LANGCELL_CACHE") == before  # the run's temporary cache is not left set
    return result


def test_every_case_with_consistent_values(returned):
    from benchmarks.corpus_verify_benchmark import BASELINE, CASES

    rows = {row["case"]: row for row in returned["rows"]}
    assert list(rows) == list(CASES)
    corpus_bytes = returned["corpus_bytes"]
    assert corpus_bytes > 300 * 50 * 2  # int16 tokens alone
    assert rows[BASELINE]["check"] == f"{corpus_bytes:,} bytes"  # the baseline read every byte
    base = rows[BASELINE]["seconds"]
    for row in rows.values():
        assert row["seconds"] > 0 and row["mb_per_s"] > 0
        assert row["mb_per_s"] == pytest.approx(corpus_bytes / 1e6 / row["seconds"])
        assert row["ratio"] == pytest.approx(row["seconds"] / base)
    assert rows[BASELINE]["ratio"] == 1.0


def test_checks_find_nothing_wrong_in_a_fresh_corpus(returned):
    rows = {row["case"]: row for row in returned["rows"]}
    assert rows["digest_pass"]["check"] == "every digest matches"
    report = returned["verify_report"]
    assert report["problems"] == [] and report["digests_checked"] and report["digests_ok"]
    assert report["bytes"] == returned["corpus_bytes"] and report["cells"] == 300
    low, high = report["token_id_range"]
    assert 2 <= low < high < 25_427 and report["id_range_ok"]  # the synthetic ids, within the vocabulary
    assert rows["verify_corpus"]["check"] == f"ok, ids in [{low}, {high}]"


def test_first_id_check_really_rechecks(tmp_path, monkeypatch):
    """Restamping the tokens file makes the next open re-read the ids (the 'first time' case)."""
    from benchmarks.corpus_verify_benchmark import restamp, write_synthetic_corpus
    from lightning_langcell.data.corpus import CellCorpus

    monkeypatch.setenv("LANGCELL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus"
    write_synthetic_corpus(path, cells=10, mean_length=4, seed=0)
    calls = []
    monkeypatch.setattr(CellCorpus, "token_id_range", lambda self: calls.append(1) or (2, 3))
    CellCorpus(path)
    CellCorpus(path)
    assert len(calls) == 1  # remembered
    restamp(path)
    CellCorpus(path)
    assert len(calls) == 2


def test_leaderboard_renders_rows_and_plots_cost_as_speed(returned, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks import leaderboard

    speed = {"commit": "c", "created": "now", "machine": {"platform": "p", "cpu_count": 2, "torch": "t"},
             "benchmarks": {"corpus_verify_benchmark": {"argv": "a", "seconds": 1.0, "rows": returned["rows"]}}}
    text = leaderboard.render(None, speed)
    assert "| case | seconds | mb_per_s | ratio | check |" in text
    assert "| digest_pass |" in text and "a cost, lower is cheaper" in text
    bars = leaderboard.speed_bars(speed)
    for row in returned["rows"]:  # the bar is a speed against the baseline read: 1 / the cost ratio
        assert bars[f"corpus_verify: {row['case']}"] == pytest.approx(1 / row["ratio"])
    assert {p.name for p in leaderboard.plot(None, speed, tmp_path)} == {"speed.png"}
