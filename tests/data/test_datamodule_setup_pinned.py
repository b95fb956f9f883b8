"""Data module setup gives the same splits, labels, texts and batches as before its memory work:
digests of them on a small corpus (missing labels, a second text column, a too-small class),
recorded from the int64 implementation, and narrow dtypes for the per-cell arrays."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

TYPES = ["T cell", "B cell", "monocyte", "natural killer cell", "rare cell"]
TISSUES = ["blood", "lung", "liver"]

# (setting, digest) recorded on the pre-change code (int64 labels/text ids/splits, object labels in the split)
PINNED = {
    "split": "c9b140baaf8524d0",
    "k_shot": "d5519b61016a9e35",
    "split_by": "2f44531a7c8f1029",
}


def _write_corpus(path, cells: int = 1200) -> None:
    from lightning_langcell.data.corpus_writer import _write

    rng = np.random.default_rng(7)
    vocabulary = {"vocabulary_checksum": "synthetic", "vocab_size": 25_427, "tokenizer_settings": {"synthetic": True}}

    def fill(writer) -> None:
        code = writer.add_source({"path": "synthetic", "bytes": 0, "blake3": None})
        lengths = rng.integers(3, 30, cells)
        flat = rng.integers(2, 25_427, int(lengths.sum()), dtype=np.int16)
        types = rng.choice([0, 1, 2, 3], cells, p=[0.4, 0.3, 0.2, 0.1])
        types[rng.random(cells) < 0.05] = -1  # missing labels
        types[[5, 17]] = 4  # a class of two cells (fewer than the three splits)
        columns = {"cell_type": pd.Categorical.from_codes(types, TYPES),
                   "tissue": pd.Categorical.from_codes(rng.integers(0, 3, cells), TISSUES),
                   "batch": pd.Categorical.from_codes(rng.integers(0, 4, cells), ["b0", "b1", "b2", "b3"])}
        writer.add_cells(flat, lengths, columns, np.full(cells, code), np.arange(cells),
                         [f"cell_{i}" for i in range(cells)])
        writer.sources[code].update(n_cells=cells, n_skipped=0)

    _write(path, False, vocabulary, [("cell_type", "categorical"), ("tissue", "categorical"),
                                     ("batch", "categorical")], fill)


SETTINGS = {
    "split": {"split": (0.8, 0.1, 0.1)},
    "k_shot": {"k_shot": 2},
    "split_by": {"split_by": "batch", "held_out": ["b2"], "split": (0.8, 0.1, 0.1)},
}


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pinned") / "corpus"
    _write_corpus(path)
    return path


def _digest(datamodule) -> str:
    digest = hashlib.sha256()

    def add(name, values) -> None:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(values, dtype=np.int64)).tobytes())

    digest.update(repr(datamodule.classes).encode() + repr(datamodule.unique_texts).encode())
    for name in ("train", "val", "test", "predict"):
        add(name, datamodule.datasets[name].indices)
    predict = datamodule.datasets["predict"]
    add("labels", predict.labels)
    add("text_ids", predict.text_ids)
    for name in ("train", "val"):
        loader = datamodule.train_dataloader() if name == "train" else datamodule.val_dataloader()
        for _, batch in zip(range(2), loader):
            for key in sorted(batch):
                if hasattr(batch[key], "numpy"):
                    add(key, batch[key].numpy())
    return digest.hexdigest()[:16]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_setup_is_unchanged(corpus_path, setting, monkeypatch, tmp_path):
    from lightning_langcell.data.datamodule import LangCellDataModule

    monkeypatch.setenv("LANGCELL_CACHE", str(tmp_path / "cache"))
    datamodule = LangCellDataModule(str(corpus_path), label_column="cell_type", batch_size=16,
                                    verify_digests=False, seed=3, **SETTINGS[setting])
    datamodule.setup("fit")
    assert _digest(datamodule) == PINNED[setting]


def test_per_cell_arrays_are_narrow(corpus_path, monkeypatch, tmp_path):
    """4 bytes a cell for labels, text ids and every split's positions (27.5M cells: 110 MB each)."""
    from lightning_langcell.data.datamodule import LangCellDataModule

    monkeypatch.setenv("LANGCELL_CACHE", str(tmp_path / "cache"))
    datamodule = LangCellDataModule(str(corpus_path), label_column="cell_type", verify_digests=False, seed=3)
    with pytest.warns(UserWarning):  # the two-cell class
        datamodule.setup("fit")
    predict = datamodule.datasets["predict"]
    assert predict.labels.dtype == np.int32 and predict.text_ids.dtype == np.int32
    for name in ("train", "val", "test", "predict"):
        assert datamodule.datasets[name].indices.dtype == np.int32, name
    assert all(str(dtype) == "int8" for dtype in datamodule._metadata[["cell_type", "tissue"]].apply(
        lambda column: column.cat.codes.dtype))
