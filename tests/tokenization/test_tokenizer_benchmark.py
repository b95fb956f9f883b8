"""The tokenizer benchmark's cases agree with each other (tokens modulo ties) on a small file."""

import pytest

from benchmarks import tokenizer_benchmark as bench


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "cells.h5ad"
    bench.write_h5ad(path, cells=120, genes=3000, detected=300, seed=1)
    return path


def test_generated_file_is_seeded_counts(small_h5ad, tmp_path):
    import anndata
    import numpy as np

    adata = anndata.read_h5ad(small_h5ad)
    assert adata.shape == (120, 3000)
    assert np.all(adata.X.data >= 1) and np.all(adata.X.data == np.round(adata.X.data))
    assert 200 < adata.X.getnnz(axis=1).mean() < 400
    np.testing.assert_array_equal(adata.obs["n_counts"], np.asarray(adata.X.sum(axis=1)).ravel())
    again = tmp_path / "again.h5ad"
    bench.write_h5ad(again, cells=120, genes=3000, detected=300, seed=1)
    assert (anndata.read_h5ad(again).X != adata.X).nnz == 0


def test_all_cases_give_the_same_tokens(small_h5ad):
    ours = bench.run_ours(str(small_h5ad), chunk_size=50)
    assert len(ours) == 120 and sum(len(t) for t in ours) > 120 * 200
    for other in (bench.run_official_dense(str(small_h5ad), chunk=32), bench.run_csr_row_loop(str(small_h5ad))):
        assert bench.cells_differing(small_h5ad, ours, other) == 0
    shorter = [t[:-1] if len(t) else t for t in ours]
    assert bench.cells_differing(small_h5ad, ours, shorter) > 0


@pytest.mark.slow
def test_benchmark_runs_end_to_end(capsys):
    bench.main(["--cells", "300", "--genes", "3000", "--detected", "300", "--chunk-size", "128", "--repeat", "1"])
    table = capsys.readouterr().out
    for case in bench.CASES:
        assert case in table
    assert "DIFFER" not in table and table.count("same as ours (modulo ties)") == 3


def test_main_returns_rows_and_scaling(capsys):
    result = bench.main(["--cells", "300", "--genes", "400", "--detected", "60", "--repeat", "1",
                         "--cases", "ours,official_dense", "--scaling", "200,400"])
    assert result["settings"] == {"cells": 300, "genes": 400, "detected": 60, "repeat": 1, "chunk_size": 4096, "seed": 0}
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "official_dense"}
    assert rows["ours"]["check"] == "reference"
    assert rows["official_dense"]["check"] == "same as ours (modulo ties)"
    ours, base = rows["ours"], rows["official_dense"]
    assert ours["cells"] == 300 and ours["cpu_s"] > 0 and ours["wall_s"] > 0
    assert ours["ratio"] == pytest.approx(base["cpu_s"] / ours["cpu_s"])
    assert ours["ratio_wall"] == pytest.approx(base["wall_s"] / ours["wall_s"])
    assert base["ratio"] == pytest.approx(1.0)
    assert ours["cells_per_s"] == pytest.approx(300 / ours["cpu_s"])
    assert ours["cells_per_s_wall"] == pytest.approx(300 / ours["wall_s"])
    assert ours["peak_mib"] > 50
    scaling = result["scaling"]
    assert [(s["case"], s["cells"]) for s in scaling] == [
        ("ours", 200), ("official_dense", 200), ("ours", 400), ("official_dense", 400)]
    for s in scaling:
        assert s["cells_per_s"] > 0 and s["cells_per_s"] == pytest.approx(s["cells"] / s["cpu_s"])
    out = capsys.readouterr().out
    assert "ours cells/s" in out and "same as ours (modulo ties)" in out


def test_bad_scaling_counts_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--scaling", "1000,abc"])
