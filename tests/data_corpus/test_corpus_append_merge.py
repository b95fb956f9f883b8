"""Appending and merging give the corpus written in one go; mismatches are refused."""

import shutil

import numpy as np
import pandas as pd
import pytest

from lightning_langcell.data import CellCorpus, merge_corpora, tokenize_to_corpus
from lightning_langcell.data.corpus import DIGEST, file_digest
from lightning_langcell.data.corpus_writer import corpus_cache_key, tokenize_command
from lightning_langcell.errors import CorpusError


@pytest.fixture(scope="module")
def corpora(pbmc_files, tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    whole = tokenize_to_corpus(list(pbmc_files), root / "whole", tokenizer=tokenizer)
    first = tokenize_to_corpus(pbmc_files[0], root / "a", tokenizer=tokenizer)
    second = tokenize_to_corpus(pbmc_files[1], root / "b", tokenizer=tokenizer)
    return whole, first, second


def assert_same_corpus(corpus: CellCorpus, reference: CellCorpus) -> None:
    """Same tokens, offsets and metadata (byte for byte, column by column)."""
    for name in ("tokens.npy", "offsets.npy"):
        assert (corpus.path / name).read_bytes() == (reference.path / name).read_bytes()
    assert sorted(corpus.columns) == sorted(reference.columns)
    pd.testing.assert_frame_equal(corpus.obs[reference.columns], reference.obs)
    for name in reference.columns:
        assert corpus.column_kind(name) == reference.column_kind(name)
        if reference.column_kind(name) == "categorical":
            assert corpus._categories(name) == reference._categories(name)
    strip = ("tokenized", "first_cell", "name")
    assert [{k: v for k, v in s.items() if k not in strip} for s in corpus.sources] == [
        {k: v for k, v in s.items() if k not in strip} for s in reference.sources
    ]
    assert [s["first_cell"] for s in corpus.sources] == [s["first_cell"] for s in reference.sources]
    corpus.verify()


def test_append_equals_one_go(corpora, pbmc_files, tokenizer, tmp_path):
    whole, first, _ = corpora
    target = tmp_path / "grown"
    shutil.copytree(first.path, target)
    grown = tokenize_to_corpus(pbmc_files[1], target, tokenizer=tokenizer, append=True)
    assert len(grown) == 49
    assert_same_corpus(grown, whole)
    assert grown.sources[0]["tokenized"] == first.sources[0]["tokenized"]  # provenance kept
    with pytest.raises(CorpusError, match="same content"):
        tokenize_to_corpus(pbmc_files[1], target, tokenizer=tokenizer, append=True)


def test_append_to_nothing_creates(pbmc_files, tokenizer, tmp_path, corpora):
    created = tokenize_to_corpus(pbmc_files[0], tmp_path / "new", tokenizer=tokenizer, append=True)
    assert_same_corpus(created, corpora[1])


def test_merge_equals_one_go(corpora, tmp_path):
    whole, first, second = corpora
    merged = merge_corpora([first.path, second.path], tmp_path / "merged")
    assert_same_corpus(merged, whole)
    with pytest.raises(CorpusError, match="already exists"):
        merge_corpora([first.path, second.path], tmp_path / "merged")
    again = merge_corpora([merged.path], tmp_path / "merged", overwrite=True)
    assert_same_corpus(again, whole)
    with pytest.raises(CorpusError, match="same content"):
        merge_corpora([first.path, whole.path], tmp_path / "twice")


def test_mismatched_vocabulary_refused(corpora, pbmc_files, stand_in, tmp_path):
    _, first, _ = corpora
    other = tokenize_to_corpus(pbmc_files[1], tmp_path / "other", tokenizer=stand_in(checksum="another"))
    with pytest.raises(CorpusError, match="gene vocabularies differ"):
        merge_corpora([first.path, other.path], tmp_path / "merged")
    shifted = tokenize_to_corpus(
        pbmc_files[1], tmp_path / "shifted", tokenizer=stand_in(checksum=first.vocabulary_checksum, shift=1)
    )
    if shifted.tokenizer_settings != first.tokenizer_settings:
        with pytest.raises(CorpusError, match="tokenizer settings differ"):
            merge_corpora([first.path, shifted.path], tmp_path / "merged")
    target = tmp_path / "a"
    shutil.copytree(first.path, target)
    with pytest.raises(CorpusError, match="vocabularies differ"):
        tokenize_to_corpus(pbmc_files[1], target, tokenizer=stand_in(checksum="another"), append=True)
    assert len(CellCorpus(target)) == 24  # untouched


def test_cache_key(pbmc_files, tokenizer, stand_in, tmp_path):
    key = corpus_cache_key(list(pbmc_files), tokenizer)
    assert len(key) == 64 and key == corpus_cache_key(list(pbmc_files), tokenizer)
    renamed = tmp_path / "renamed.h5ad"
    shutil.copy(pbmc_files[0], renamed)
    assert corpus_cache_key([str(renamed), pbmc_files[1]], tokenizer) == key  # content, not path
    assert corpus_cache_key(list(reversed(pbmc_files)), tokenizer) != key
    assert corpus_cache_key(list(pbmc_files), tokenizer, obs_columns=["n_counts"]) != key
    assert corpus_cache_key(pbmc_files[0], stand_in()) != corpus_cache_key(pbmc_files[0], stand_in(shift=1))
    with open(renamed, "ab") as handle:
        handle.write(b"\0")
    assert corpus_cache_key([str(renamed), pbmc_files[1]], tokenizer) != key


def test_tokenize_command(pbmc_files, corpora, tmp_path, capsys):
    whole = corpora[0]
    summary = tokenize_command(list(pbmc_files), str(tmp_path / "cli"), chunk_size=5, keep_empty=True)
    printed = capsys.readouterr().out
    assert summary["n_cells"] == 49 and summary["n_tokens"] == int(whole.lengths.sum())
    assert [s["n_skipped"] for s in summary["sources"]] == [1, 0]
    assert "49 cells" in printed and "1 skipped" in printed
    assert_same_corpus(CellCorpus(tmp_path / "cli"), whole)
    short = tokenize_command([pbmc_files[0]], str(tmp_path / "short"), max_genes=10)
    assert short["n_tokens"] == int(np.minimum(CellCorpus(corpora[1].path).lengths, 10).sum())
    with pytest.raises(CorpusError, match="settings differ"):
        tokenize_command([pbmc_files[1]], str(tmp_path / "short"), append=True)


def test_input_given_twice_refused(pbmc_files, tokenizer, tmp_path):
    """The same path twice, or a copy under another name, is refused (same content digest) before
    any tokenizing; neither leaves an output behind."""
    with pytest.raises(CorpusError, match="same content"):
        tokenize_to_corpus([pbmc_files[0], pbmc_files[0]], tmp_path / "twice", tokenizer=tokenizer)
    copy = tmp_path / "copy.h5ad"
    shutil.copyfile(pbmc_files[0], copy)
    with pytest.raises(CorpusError, match="same content"):
        tokenize_to_corpus([pbmc_files[0], copy], tmp_path / "copied", tokenizer=tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.h5ad"]
    corpus = tokenize_to_corpus([pbmc_files[0]], tmp_path / "once", tokenizer=tokenizer)
    assert corpus.sources[0][DIGEST] == file_digest(pbmc_files[0])
