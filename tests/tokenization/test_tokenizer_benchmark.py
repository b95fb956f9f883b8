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
