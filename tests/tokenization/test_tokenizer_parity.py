"""Parity with the official LangCell tokenizer outputs (tests/data/langcell-official-tokenizer)."""

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from lightning_langcell.tokenization import CellTokenizer, same_ranking

from tokenization_helpers import FIXTURE_FILES


def _tokenize(tokenizer: CellTokenizer, item, **kwargs):
    chunks = list(tokenizer.iter_chunks(item, **kwargs))
    tokens = [t for c in chunks for t in c.tokens]
    cell_ids = [i for c in chunks for i in c.obs["cell_id"]]
    values = [v for c in chunks for v in c.values] if kwargs.get("with_values") else None
    return tokens, cell_ids, values


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_tokens_match_official_modulo_ties(official_dir, official_expected, name):
    expected = official_expected[name]
    tokenizer = CellTokenizer(keep_empty=True)  # the official code keeps empty cells
    tokens, cell_ids, _ = _tokenize(tokenizer, official_dir / f"{name}.h5ad")
    assert cell_ids == expected["cell_ids"]
    assert [len(t) for t in tokens] == expected["length"]
    for want, got, values in zip(expected["input_ids"], tokens, expected["normalized_values"]):
        assert got.dtype == np.int32
        assert sorted(want) == sorted(got.tolist())
        assert same_ranking(want, got, values)
    report = tokenizer.report
    assert report.cells_tokenized == len(expected["cell_ids"])
    assert report.cells_skipped_filter_pass == len(expected["skipped_cell_ids_filter_pass_not_1"])


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_full_ranking_and_values_match_official(official_dir, official_expected, name):
    """Untruncated ranking and float64 normalised values (rtol 1e-12; they are in fact exact)."""
    expected = official_expected[name]
    tokens, _, values = _tokenize(CellTokenizer(max_genes=None, keep_empty=True), official_dir / f"{name}.h5ad", with_values=True)
    assert [len(t) for t in tokens] == expected["full_length"]
    long_cells = expected["full_input_ids_when_longer_than_2048"]
    for cell_id, got, want_values, got_values in zip(expected["cell_ids"], tokens, expected["normalized_values"], values):
        np.testing.assert_allclose(got_values, want_values, rtol=1e-12, atol=0)
        assert np.array_equal(got_values, np.asarray(want_values, dtype=np.float64))
        if cell_id in long_cells:
            assert same_ranking(long_cells[cell_id], got, want_values)


def test_fixture_edge_cases(official_dir, official_expected):
    expected = official_expected["synthetic_nb_40cells"]
    tokenizer = CellTokenizer(keep_empty=True)  # the official code keeps empty cells
    tokens, cell_ids, _ = _tokenize(tokenizer, official_dir / "synthetic_nb_40cells.h5ad")
    by_id = dict(zip(cell_ids, tokens))
    assert "syn_07" not in by_id and expected["skipped_cell_ids_filter_pass_not_1"] == ["syn_07"]
    assert len(by_id["syn_03"]) == 0  # all-zero cell -> empty list
    assert len(by_id["syn_05"]) == 2048  # 2505 detected genes, truncated
    report = tokenizer.report.as_dict()
    assert report["cells_seen"] == 40 and report["cells_empty"] == 1 and report["cells_truncated"] == 1
    assert report["genes_total"] == 2612 and report["genes_mapped_by_ensembl"] == 2600
    assert report["genes_unmapped"] + report["genes_outside_vocabulary"] == 12


def test_ties_are_ordered_by_token_id(official_dir, official_expected):
    """418 exact tie groups: ours puts the lower token id first, in every group."""
    tokens, _, values = _tokenize(CellTokenizer(max_genes=None, keep_empty=True), official_dir / "synthetic_nb_40cells.h5ad", with_values=True)
    groups = 0
    for got, got_values in zip(tokens, values):
        tied = np.flatnonzero(got_values[1:] == got_values[:-1])
        groups += int(np.count_nonzero(np.diff(np.concatenate(([-2], tied))) > 1))
        assert np.all(got[tied] < got[tied + 1])
    assert groups == 418


def test_gene_order_of_the_file_does_not_change_tokens(official_dir):
    adata = anndata.read_h5ad(official_dir / "synthetic_nb_40cells.h5ad")
    permuted = adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy()
    tokenizer = CellTokenizer(keep_empty=True)  # the official code keeps empty cells
    for a, b in zip(tokenizer.tokenize(adata), tokenizer.tokenize(permuted)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 4096])
def test_chunked_equals_unchunked(official_dir, chunk_size):
    path = official_dir / "real_pbmc68k_50cells.h5ad"
    whole = CellTokenizer(chunk_size=10_000).tokenize(path)
    chunks = list(CellTokenizer().iter_chunks(path, chunk_size=chunk_size))
    assert [c.rows.size for c in chunks][0] == min(chunk_size, 50)
    assert np.array_equal(np.concatenate([c.rows for c in chunks]), np.arange(50))
    for a, b in zip(whole, [t for c in chunks for t in c.tokens]):
        assert np.array_equal(a, b)


def test_backed_in_memory_and_matrix_formats_agree(official_dir):
    path = official_dir / "synthetic_nb_40cells.h5ad"
    tokenizer = CellTokenizer(chunk_size=7, keep_empty=True)
    reference = tokenizer.tokenize(path)
    in_memory = anndata.read_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    variants = [in_memory, backed]
    for convert in (sp.csc_matrix, lambda x: x.toarray()):
        copy = in_memory.copy()
        copy.X = convert(in_memory.X)
        variants.append(copy)
    for variant in variants:
        got = tokenizer.tokenize(variant)
        assert len(got) == len(reference) == 39
        assert all(np.array_equal(a, b) for a, b in zip(reference, got))
    backed.file.close()


def test_backed_file_with_dense_and_csc_x(official_dir, tmp_path, monkeypatch):
    from lightning_langcell.tokenization import cell_source

    monkeypatch.setattr(cell_source, "DENSE_PIECE", 3000)  # dense rows read ~3 at a time
    adata = anndata.read_h5ad(official_dir / "real_pbmc68k_50cells.h5ad")
    reference = CellTokenizer().tokenize(adata)
    for name, convert in (("dense", lambda x: x.toarray()), ("csc", sp.csc_matrix)):
        copy = adata.copy()
        copy.X = convert(adata.X)
        copy.write_h5ad(tmp_path / f"{name}.h5ad")
        if name == "csc":
            with pytest.warns(UserWarning, match="CSC"):
                got = CellTokenizer(chunk_size=8).tokenize(tmp_path / f"{name}.h5ad")
        else:
            got = CellTokenizer(chunk_size=8).tokenize(tmp_path / f"{name}.h5ad")
        assert all(np.array_equal(a, b) for a, b in zip(reference, got))
