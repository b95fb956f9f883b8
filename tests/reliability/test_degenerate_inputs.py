"""Degenerate inputs are not passed in silence (issue 18.6) and tokenize's messages tell the
true reason (issue 18.10): empty cells, 0 cells, low vocabulary coverage, bad output parents,
non-UTF-8 strings, huge labels in warnings."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from lightning_langcell.data import tokenize_to_corpus
from lightning_langcell.data.corpus_writer import tokenize_command
from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.errors import CorpusError, LangCellInputError, shorten
from lightning_langcell.tokenization import CellTokenizer

CELLS = Path(__file__).resolve().parents[1] / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
EMPTY_CELL = 29  # no detected gene; cell 3 has filter_pass 0


def _cells() -> ad.AnnData:
    return ad.read_h5ad(CELLS)


def _with_unknown_genes(tmp_path: Path, fraction_unknown: float) -> Path:
    """The 50 cells with the first ``fraction_unknown`` of their genes renamed out of the vocabulary."""
    adata = _cells()
    n_unknown = int(round(fraction_unknown * adata.n_vars))
    ids = adata.var["ensembl_id"].astype(str).to_numpy().copy()
    ids[:n_unknown] = [f"NOT_A_GENE_{i}" for i in range(n_unknown)]
    adata.var["ensembl_id"] = ids
    adata.var_names = ids
    path = tmp_path / f"unknown_{n_unknown}.h5ad"
    adata.write_h5ad(path)
    return path


# --------------------------------------------------------------------------- empty cells
def test_empty_cells_are_dropped_by_default_and_counted(tmp_path, capsys):
    summary = tokenize_command([str(CELLS)], str(tmp_path / "dropped"))
    printed = capsys.readouterr().out
    (source,) = summary["sources"]
    assert summary["n_cells"] == 48 and source["n_skipped"] == 2 and source["n_empty_dropped"] == 1
    assert "48 cells kept, 2 skipped (1 without any vocabulary gene)" in printed
    from lightning_langcell.data import CellCorpus

    dropped = CellCorpus(tmp_path / "dropped")
    assert EMPTY_CELL not in dropped.column("source_index").tolist() and dropped.lengths.min() > 0
    kept = tokenize_command([str(CELLS)], str(tmp_path / "kept"), keep_empty=True)
    assert kept["n_cells"] == 49 and kept["sources"][0]["n_empty_dropped"] == 0
    kept_corpus = CellCorpus(tmp_path / "kept")
    assert kept_corpus.lengths[kept_corpus.column("source_index").tolist().index(EMPTY_CELL)] == 0


def test_the_data_module_never_trains_on_or_predicts_empty_cells(tmp_path):
    module = LangCellDataModule(data=str(CELLS), cache_dir=str(tmp_path / "cache"), texts=False, max_length=32)
    module.setup("predict")
    predicted = module.datasets["predict"]
    rows = module.corpus.column("source_index")[predicted.indices]
    assert len(predicted) == 48 and EMPTY_CELL not in rows.tolist() and 3 not in rows.tolist()
    assert module.corpus.lengths.min() > 0
    report = module.corpus.sources[0]["report"]
    assert report["cells_empty"] == 1 and report["cells_dropped_empty"] == 1


# ------------------------------------------------------------------------------- 0 cells
def test_a_file_with_zero_cells_is_an_error(tmp_path):
    _cells()[:0].copy().write_h5ad(tmp_path / "none.h5ad")
    (tmp_path / "out").mkdir()
    with pytest.raises(LangCellInputError, match=r"Input\(s\) with 0 cells: \[.*none.h5ad'\]") as caught:
        tokenize_to_corpus(tmp_path / "none.h5ad", tmp_path / "out" / "corpus")
    assert "Fix: Pass files that hold cells" in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []  # no 0-cell corpus to crash fit later
    with pytest.raises(LangCellInputError, match="0 cells"):
        CellTokenizer().tokenize(_cells()[:0].copy())


def test_a_file_whose_cells_are_all_empty_is_an_error(tmp_path):
    adata = _cells()
    adata.X = adata.X * 0
    adata.write_h5ad(tmp_path / "zeros.h5ad")
    with pytest.raises(LangCellInputError, match="No cell of .*zeros.h5ad is left to tokenize: 50 cell\\(s\\), 49 without"):
        tokenize_to_corpus(tmp_path / "zeros.h5ad", tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()


# ----------------------------------------------------------------------- gene coverage
def test_low_vocabulary_coverage_warns_with_the_percentage_and_the_fix(tmp_path):
    path = _with_unknown_genes(tmp_path, 0.7)
    tokenizer = CellTokenizer()
    with pytest.warns(UserWarning, match=r"Only 209 of the 765 genes of .*unknown_536.h5ad \(27\.3%\) map to the "
                                         "gene vocabulary") as caught:
        tokens = tokenizer.tokenize(path)
    assert tokenizer.report.gene_coverage == pytest.approx(209 / 765, abs=1e-4)
    message = str(caught[0].message)
    assert "NOT_A_GENE_0" in message and "Ensembl ids" in message and "orthologs" in message
    assert len(tokens) == 48
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CellTokenizer().tokenize(_with_unknown_genes(tmp_path, 0.3))  # 70 %: no warning


def test_coverage_below_the_floor_is_an_error_unless_overridden(tmp_path):
    path = _with_unknown_genes(tmp_path, 0.95)
    with pytest.raises(LangCellInputError, match=r"Only 35 of the 765 genes .* \(4\.6%\) map .* below min_gene_coverage=10%") as caught:
        tokenize_command([str(path)], str(tmp_path / "corpus"))
    assert "--min-gene-coverage" in caught.value.fix and not (tmp_path / "corpus").exists()
    with pytest.warns(UserWarning, match=r"\(4\.6%\)"):
        summary = tokenize_command([str(path)], str(tmp_path / "corpus"), min_gene_coverage=0.01)
    assert summary["sources"][0]["gene_coverage"] == pytest.approx(35 / 765, abs=1e-4)
    with pytest.raises(LangCellInputError, match="min_gene_coverage must be in"):
        CellTokenizer(min_gene_coverage=5)


# ------------------------------------------------------------------- truer messages
def test_output_under_a_file_names_the_true_reason(tmp_path):
    with pytest.raises(CorpusError) as caught:
        tokenize_to_corpus(CELLS, "/dev/null/corpus")
    assert "/dev/null is not a directory" in caught.value.problem
    assert "someone else" not in str(caught.value)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CorpusError, match="a_file is not a directory"):
        tokenize_to_corpus(CELLS, tmp_path / "a_file" / "deeper" / "corpus")


def test_output_in_a_read_only_folder_names_the_true_reason(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write anywhere: the folder is reported as this user sees it
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked")
    with pytest.raises(CorpusError, match="directory .*locked is not writable by this user") as caught:
        tokenize_to_corpus(CELLS, tmp_path / "locked" / "sub" / "corpus")
    assert "someone else" not in str(caught.value) and list((tmp_path / "locked").iterdir()) == []


def test_non_utf8_obs_string_is_named_not_called_truncated(tmp_path):
    path = tmp_path / "latin1.h5ad"
    shutil.copy(CELLS, path)
    with h5py.File(path, "r+") as handle:
        group = handle["obs"]["tissue"]
        categories = [bytes(value) for value in group["categories"][...]]
        categories[0] = "blood (Blut, sang) \u00e9".encode("latin-1")
        del group["categories"]
        written = group.create_dataset("categories", data=np.array(categories, dtype=object),
                                       dtype=h5py.string_dtype("utf-8"))
        written.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
    with pytest.raises(LangCellInputError) as caught:
        tokenize_to_corpus(path, tmp_path / "corpus")
    message = str(caught.value)
    assert "obs column 'tissue' holds a string that is not valid UTF-8" in message
    assert "truncated" not in message and "Re-encode that column's strings as UTF-8" in caught.value.fix


def test_huge_labels_are_shortened_in_warnings():
    from lightning_langcell.data.splits import stratified_split
    from lightning_langcell.text import CellTextBuilder

    label = "T cell " * 15_000  # 105,000 characters
    with pytest.warns(UserWarning) as caught:
        stratified_split([label] + ["B cell"] * 20, (0.8, 0.1, 0.1), seed=0)
    (message,) = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(message) < 400 and shorten(label) in message and "(105,000 characters)" in message
    with pytest.warns(UserWarning) as caught:
        CellTextBuilder().cell_text({"cell_type": label})
    (message,) = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(message) < 600 and "T cell T cell" in message and "… (104,999 characters)" in message
    assert shorten("short") == "short" and shorten("x" * 81) == "x" * 80 + "… (81 characters)"
