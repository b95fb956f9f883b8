"""Data module setup at scale: no per-cell Python strings, labels mapped per distinct value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture()
def corpus_path(tmp_path, monkeypatch):
    from benchmarks.corpus_verify_benchmark import write_synthetic_corpus

    monkeypatch.setenv("LANGCELL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus"
    write_synthetic_corpus(path, cells=300, mean_length=10, seed=0,
                           categories={"cell_type": ["T cell", "B cell", "monocyte"]})
    return path


def test_setup_reads_no_per_cell_text_column(corpus_path, monkeypatch):
    from lightning_langcell.data.corpus import CellCorpus
    from lightning_langcell.data.datamodule import LangCellDataModule

    read = []
    column = CellCorpus.column
    monkeypatch.setattr(CellCorpus, "column", lambda self, name, *a, **k: read.append(name) or column(self, name, *a, **k))
    datamodule = LangCellDataModule(str(corpus_path), label_column="cell_type", verify_digests=False)
    datamodule.setup("fit")
    assert "obs_name" not in read and "source_index" not in read  # 1M cells: ~65 MB of str objects
    assert "cell_type" in read
    assert datamodule.classes == ["B cell", "T cell", "monocyte"]
    expected = pd.Series(datamodule.corpus.column("cell_type")).map({"B cell": 0, "T cell": 1, "monocyte": 2})
    np.testing.assert_array_equal(datamodule.datasets["predict"].labels, expected.to_numpy())
    sizes = sorted(len(datamodule.datasets[name]) for name in ("train", "val", "test"))
    assert sum(sizes) == 300
    assert len(datamodule.class_texts()) == 3


def test_split_by_a_text_column_still_reads_it(corpus_path):
    from lightning_langcell.data.datamodule import LangCellDataModule

    datamodule = LangCellDataModule(str(corpus_path), label_column="cell_type", split_by="obs_name",
                                    held_out=["cell_3", "cell_7"], verify_digests=False)
    datamodule.setup("fit")
    np.testing.assert_array_equal(datamodule.splits["test"], [3, 7])
