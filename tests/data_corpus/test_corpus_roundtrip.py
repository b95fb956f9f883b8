"""Corpus round trip on real cells: tokens, offsets, metadata and manifest as written."""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from blake3 import blake3

from lightning_langcell.data import CellCorpus, CellRecord, tokenize_to_corpus
from lightning_langcell.data import corpus as corpus_module
from lightning_langcell.errors import LangCellInputError


@pytest.fixture(scope="module")
def written(pbmc_files, tokenizer, tmp_path_factory):
    output = tmp_path_factory.mktemp("corpora") / "pbmc"
    corpus = tokenize_to_corpus(list(pbmc_files), output, tokenizer=tokenizer, chunk_size=7)
    return corpus, output


def test_tokens_equal_the_tokenizer(written, pbmc_files, tokenizer):
    corpus, _ = written
    expected = [tokens for path in pbmc_files for tokens in tokenizer.tokenize(path)]
    assert len(corpus) == len(expected) == 49  # 50 cells, one with filter_pass 0
    for index, tokens in enumerate(expected):
        record = corpus[index]
        assert isinstance(record, CellRecord)
        assert record.input_ids.dtype == np.int32
        np.testing.assert_array_equal(record.input_ids, tokens)
    np.testing.assert_array_equal(corpus.lengths, [len(tokens) for tokens in expected])
    np.testing.assert_array_equal(corpus.offsets, np.concatenate([[0], np.cumsum(corpus.lengths)]))
    assert corpus.lengths[24 + 4] == 0  # the all-zero cell of file B is kept, empty
    assert corpus.tokens.dtype == np.int16
    np.testing.assert_array_equal(corpus.input_ids(-1), expected[-1])
    with pytest.raises(IndexError):
        corpus[49]


def test_metadata_values(written, pbmc_files, expected_obs):
    corpus, _ = written
    expected = expected_obs(pbmc_files)
    obs = corpus.obs
    assert list(obs.columns) == [
        "source_file", "source_index", "obs_name", "cell_type", "tissue",
        "tissue_ontology_term_id", "batch", "donor_id",
    ]
    for name in ("cell_type", "tissue", "tissue_ontology_term_id", "obs_name", "source_file"):
        assert obs[name].astype(str).tolist() == expected[name].astype(str).tolist(), name
    np.testing.assert_array_equal(obs["source_index"], expected["source_index"])
    assert obs["source_index"].dtype == np.int64
    assert obs["source_index"].iloc[3] == 4  # row 3 of file A was skipped
    # batch is text in A and an integer in B: stored as categories "b1" and "7"
    assert obs["batch"].tolist() == ["b1"] * 24 + ["7"] * 25
    # donor_id exists only in A: missing for B's cells
    assert obs["donor_id"].iloc[:24].tolist() == expected["donor_id"].iloc[:24].astype(str).tolist()
    assert obs["donor_id"].iloc[24:].isna().all()
    record = corpus[30]
    assert record.metadata == {
        "source_file": os.path.abspath(pbmc_files[1]),
        "source_index": 6,
        "obs_name": expected["obs_name"].iloc[30],
        "cell_type": expected["cell_type"].iloc[30],
        "tissue": "blood",
        "tissue_ontology_term_id": "UBERON:0000178",
        "batch": "7",
        "donor_id": None,
    }


def test_extra_obs_columns(pbmc_files, tokenizer, tmp_path, expected_obs):
    corpus = tokenize_to_corpus(
        pbmc_files[0], tmp_path / "c", tokenizer=tokenizer, obs_columns=["n_counts", "filter_pass"]
    )
    assert corpus.column_kind("n_counts") == "numeric"
    np.testing.assert_array_equal(corpus.column("n_counts"), expected_obs(pbmc_files[:1])["n_counts"])
    assert corpus.column("filter_pass").tolist() == [1.0] * 24
    everything = tokenize_to_corpus(pbmc_files[0], tmp_path / "all", tokenizer=tokenizer, obs_columns="all")
    assert set(everything.columns) >= {"n_counts", "filter_pass", "cell_type", "donor_id", "batch"}
    with pytest.raises(LangCellInputError, match="not_a_column"):
        tokenize_to_corpus(pbmc_files[0], tmp_path / "x", tokenizer=tokenizer, obs_columns=["not_a_column"])
    with pytest.raises(LangCellInputError, match="clash"):
        tokenize_to_corpus(pbmc_files[0], tmp_path / "y", tokenizer=tokenizer, obs_columns=["source_file"])


def test_manifest(written, pbmc_files, tokenizer):
    corpus, output = written
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["format"] == "lightning_langcell.cell_corpus"
    assert manifest["format_version"] == 2
    assert manifest["n_cells"] == 49 and manifest["n_tokens"] == int(corpus.lengths.sum())
    assert manifest["vocabulary_checksum"] == tokenizer.vocabulary.checksum == corpus.vocabulary_checksum
    assert manifest["vocab_size"] == 25427 and manifest["token_dtype"] == "<i2"
    for source, path, kept, first in zip(manifest["sources"], pbmc_files, (24, 25), (0, 24)):
        content = open(path, "rb").read()
        assert source["path"] == os.path.abspath(path)
        assert source["bytes"] == len(content)
        assert source["blake3"] == blake3(content).hexdigest()
        assert (source["n_cells"], source["n_skipped"], source["first_cell"]) == (kept, 25 - kept, first)
        assert source["report"] is not None and source["tokenized"].endswith("Z")
    for name, info in manifest["files"].items():
        content = (output / name).read_bytes()
        data = content[info.get("digest_offset", 0):]  # .npy: the data after the 128-byte header
        assert info["bytes"] == len(content) and info["blake3"] == blake3(data).hexdigest()
        assert info.get("digest_offset", 0) == (128 if name.endswith(".npy") else 0)
    corpus.verify()


def test_open_reads_no_array(written, monkeypatch):
    _, output = written

    def no_hashing(path, offset=0, block_size=0):
        raise AssertionError(f"opening hashed {path}")

    monkeypatch.setattr(corpus_module, "file_digest", no_hashing)
    corpus = CellCorpus(output)
    assert isinstance(corpus.tokens, np.memmap) and isinstance(corpus.offsets, np.memmap)
    assert corpus._cache == {}  # no metadata column loaded yet
    assert corpus.value("cell_type", 0) == corpus.obs["cell_type"].iloc[0]


def test_pickles_by_path(written):
    corpus, output = written
    blob = pickle.dumps(corpus)
    assert len(blob) < 500  # the path, never the arrays
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.input_ids(5), corpus.input_ids(5))
    assert again.path == output


def test_chunk_size_does_not_change_bytes(pbmc_files, tokenizer, tmp_path, written):
    _, reference = written
    other = tokenize_to_corpus(list(pbmc_files), tmp_path / "c", tokenizer=tokenizer, chunk_size=1000)
    for name in other.manifest["files"]:
        assert (other.path / name).read_bytes() == (reference / name).read_bytes(), name


def test_large_vocabulary_uses_int32(pbmc_files, stand_in, tmp_path):
    corpus = tokenize_to_corpus(pbmc_files[0], tmp_path / "c", tokenizer=stand_in(vocab_size=40000, shift=30000))
    assert corpus.tokens.dtype == np.int32
    assert corpus.input_ids(0).min() >= 30002
    pd.testing.assert_series_equal(
        pd.Series(corpus.lengths), pd.Series([len(t) for t in stand_in().tokenize(pbmc_files[0])])
    )


def test_anndata_and_bare_obs(pbmc_files, tokenizer, tmp_path):
    import anndata as ad

    cells = ad.read_h5ad(pbmc_files[0])
    bare = ad.AnnData(X=cells.X, var=cells.var)  # no obs columns at all: every cell passes
    bare.write_h5ad(tmp_path / "bare.h5ad")
    from_file = tokenize_to_corpus(str(tmp_path / "bare.h5ad"), tmp_path / "a", tokenizer=tokenizer)
    in_memory = tokenize_to_corpus(bare, tmp_path / "b", tokenizer=tokenizer)
    assert len(from_file) == len(in_memory) == 25 and from_file.columns == in_memory.columns
    assert from_file.columns == ["source_file", "source_index", "obs_name"]
    assert in_memory.sources[0]["path"] is None and in_memory.value("source_file", 0) == "<AnnData 0>"
    for name in ("tokens.npy", "offsets.npy"):
        assert (from_file.path / name).read_bytes() == (in_memory.path / name).read_bytes()
    np.testing.assert_array_equal(from_file.input_ids(0), tokenizer.tokenize(bare)[0])
