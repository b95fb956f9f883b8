"""Bad inputs give one clear LangCellInputError; filter_pass, n_counts and empty cells behave."""

import h5py
import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization import CellTokenizer

from tokenization_helpers import counts_adata, expected_tokens, genes_with_medians


@pytest.fixture()
def genes(vocabulary):
    return genes_with_medians(vocabulary, 6)


def _adata(genes, x=None, **kwargs):
    x = np.array([[3, 0, 1, 2, 0, 5], [0, 2, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]]) if x is None else x
    return counts_adata(x, genes, **kwargs)


def _error(item, **tokenizer_kwargs) -> LangCellInputError:
    with pytest.raises(LangCellInputError) as caught:
        CellTokenizer(**tokenizer_kwargs).tokenize(item)
    assert caught.value.fix, "every input error names a fix"
    return caught.value


def test_n_counts_from_obs_else_row_sums(vocabulary, genes):
    x = np.array([[3, 0, 1, 2, 0, 5], [0, 2, 0, 0, 1, 0]])
    with_column = CellTokenizer().tokenize(_adata(genes, x, obs={"n_counts": [1000.0, 7.0]}))
    assert with_column[0].tolist() == expected_tokens(vocabulary, genes, x[0], 1000.0)
    tokenizer = CellTokenizer()
    from_sums = tokenizer.tokenize(_adata(genes + ["NOT_A_GENE"], np.hstack([x, [[4], [0]]])))
    assert tokenizer.report.n_counts_source == "row sums of X over all genes"
    assert from_sums[0].tolist() == expected_tokens(vocabulary, genes, x[0], 15.0)  # 11 + 4 unmapped


def test_other_n_counts_column(vocabulary, genes):
    adata = _adata(genes, obs={"nCount_RNA": [500.0, 10.0, 6.0]})
    tokens = CellTokenizer(n_counts_key="nCount_RNA").tokenize(adata)
    assert tokens[1].tolist() == expected_tokens(vocabulary, genes, [0, 2, 0, 0, 1, 0], 10.0)


def test_filter_pass_skips_zeros_and_missing_column_means_all(genes):
    tokenizer = CellTokenizer()
    chunks = list(tokenizer.iter_chunks(_adata(genes, obs={"filter_pass": [1, 0, 1]})))
    assert chunks[0].rows.tolist() == [0, 2] and chunks[0].obs.index.tolist() == ["cell_0", "cell_2"]
    assert tokenizer.report.cells_skipped_filter_pass == 1 and tokenizer.report.cells_tokenized == 2
    assert len(CellTokenizer().tokenize(_adata(genes, obs={"filter_pass": [True, False, True]}))) == 2
    assert len(CellTokenizer().tokenize(_adata(genes))) == 3
    error = _error(_adata(genes, obs={"filter_pass": [1, 2, 1]}))
    assert "filter_pass" in str(error)


def test_empty_cells_kept_or_dropped(genes):
    x = np.array([[3, 0, 1, 2, 0, 5], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    tokenizer = CellTokenizer(keep_empty=True)
    kept = tokenizer.tokenize(_adata(genes, x))
    assert [len(t) for t in kept] == [4, 0, 6] and tokenizer.report.cells_empty == 1
    dropper = CellTokenizer()  # empty cells are dropped by default
    chunk = next(dropper.iter_chunks(_adata(genes, x)))
    assert [len(t) for t in chunk.tokens] == [4, 6] and chunk.rows.tolist() == [0, 2]
    assert chunk.lengths.tolist() == [4, 6] and dropper.report.cells_dropped_empty == 1
    assert np.array_equal(chunk.tokens[1], kept[2])


def test_non_integer_values_refused_unless_assume_counts(genes):
    logged = np.log1p(np.array([[3, 0, 1, 2, 0, 5], [0, 2, 0, 0, 1, 0]], dtype=float))
    error = _error(_adata(genes, logged))
    assert "not look like raw counts" in error.problem and "assume_counts=True" in error.fix
    tokens = CellTokenizer(assume_counts=True).tokenize(_adata(genes, logged))
    assert [len(t) for t in tokens] == [4, 2]


@pytest.mark.parametrize("bad, words", [(-1.0, "negative"), (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")])
def test_negative_nan_inf_refused(genes, bad, words):
    x = np.array([[3, 0, 1, 2, 0, 5], [0, 2, 0, 0, 1, 0]], dtype=float)
    x[1, 1] = bad
    assert words in _error(_adata(genes, x), assume_counts=True).problem


def test_no_gene_in_vocabulary(genes):
    error = _error(counts_adata(np.ones((2, 3)), ["FOO1", "BAR2", "BAZ3"]))
    assert "None of the 3 genes" in error.problem and "FOO1" in error.problem


def test_duplicate_var_names(genes):
    adata = _adata(genes)
    adata.var_names = [genes[0], genes[0]] + genes[2:]
    assert "duplicated gene name" in _error(adata).problem


def test_transposed_matrix(genes):
    barcodes = ["AAACCTGAGAAACCAT-1", "AAACCTGAGAAACCGC-1", "AAACCTGAGAAACCTA-1"]
    adata = counts_adata(np.ones((6, 3)), barcodes, obs_names=genes)
    error = _error(adata)
    assert "transposed" in error.problem and "adata.T" in error.fix


def test_n_counts_must_be_valid(genes):
    assert "obs['n_counts']" in _error(_adata(genes, obs={"n_counts": [10.0, -1.0, 5.0]})).problem
    assert "<= 0" in _error(_adata(genes, obs={"n_counts": [10.0, 0.0, 5.0]})).problem


def test_missing_truncated_and_foreign_files(tmp_path, official_dir, genes):
    assert "does not exist" in _error(tmp_path / "missing.h5ad").problem
    (tmp_path / "notes.h5ad").write_text("hello, not HDF5")
    assert "not a readable .h5ad" in _error(tmp_path / "notes.h5ad").problem
    whole = (official_dir / "synthetic_nb_40cells.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(whole[: len(whole) // 2])
    assert "truncated" in _error(tmp_path / "cut.h5ad").problem
    with h5py.File(tmp_path / "plain.h5", "w") as handle:
        handle["data"] = np.arange(3)
    assert "not an AnnData" in _error(tmp_path / "plain.h5").problem
    assert "Cannot tokenize a list" in _error([1, 2, 3]).problem


@pytest.mark.parametrize("kwargs", [{"max_genes": 0}, {"chunk_size": 0}, {"chunk_size": 2.5}])
def test_bad_settings(kwargs):
    with pytest.raises(LangCellInputError):
        CellTokenizer(**kwargs)
