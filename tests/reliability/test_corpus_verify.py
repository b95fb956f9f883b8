"""Corpus integrity when a corpus is used (issue 18.5): digests on open (skippable), token ids
range-checked once per corpus, ``verify_corpus`` reports, damaged cache entries rebuilt."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightning_langcell.data import tokenize_to_corpus
from lightning_langcell.data import corpus as corpus_module
from lightning_langcell.data.corpus import CellCorpus
from lightning_langcell.data.corpus_verify import verify_corpus
from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.errors import CorpusError

CELLS = Path(__file__).resolve().parents[1] / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
NPY_HEADER = 128  # bytes before the data of every .npy file the writer makes


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Remembered id checks go to this test's folder, and none is remembered in memory."""
    monkeypatch.setenv("LANGCELL_CACHE", str(tmp_path / "cache_root"))
    monkeypatch.setattr(corpus_module, "_CHECKED_IDS", {})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return tokenize_to_corpus(CELLS, tmp_path_factory.mktemp("pristine") / "corpus").path


@pytest.fixture()
def corpus_dir(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "corpus"))


def _flip(path: Path, position: int, mask: int) -> None:
    """XOR one byte of ``path`` in place (the file's mtime changes, as with any damage)."""
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([byte ^ mask]))


def _flip_token_high_byte(corpus: Path) -> None:
    """Token 0 (int16, little-endian) gets its sign bit flipped: an id outside the vocabulary."""
    _flip(corpus / "tokens.npy", NPY_HEADER + 1, 0x80)


def _setup(data: Path, tmp_path: Path, **kwargs) -> LangCellDataModule:
    module = LangCellDataModule(data=str(data), cache_dir=str(tmp_path / "cache"), label_column=None,
                                texts=False, max_length=32, **kwargs)
    module.setup("fit")
    return module


def test_verify_corpus_reports_what_it_checked(corpus_dir):
    report = verify_corpus(corpus_dir)
    corpus = CellCorpus(corpus_dir)
    tokens = np.asarray(corpus.tokens)
    assert report["cells"] == len(corpus) == 48 and report["tokens"] == tokens.size
    assert report["digests_checked"] is True and report["digests_ok"] is True and report["id_range_ok"] is True
    assert report["token_id_range"] == [int(tokens.min()), int(tokens.max())]
    assert report["vocab_size"] == 25427 and report["problems"] == []
    assert report["bytes"] == sum(p.stat().st_size for p in corpus_dir.rglob("*.*") if p.name != "manifest.json")
    assert report["digest_mb_per_s"] > 0
    skipped = verify_corpus(corpus_dir, check_digests=False)
    assert skipped["digests_checked"] is False and skipped["digests_ok"] is None and skipped["id_range_ok"] is True


def test_flipped_byte_is_named_on_open_and_by_verify(corpus_dir, tmp_path):
    _flip_token_high_byte(corpus_dir)
    with pytest.raises(CorpusError) as caught:
        _setup(corpus_dir, tmp_path)  # verify_digests=True by default
    message = str(caught.value)
    assert f"{corpus_dir / 'tokens.npy'} does not match its blake3 digest" in message
    assert "Fix: Re-create it from its input files" in message
    with pytest.raises(CorpusError) as caught:
        verify_corpus(corpus_dir)
    problems = caught.value.report["problems"]
    assert len(problems) == 2 and "tokens.npy does not match its blake3 digest" in problems[0]
    assert "outside the vocabulary [0, 25427)" in problems[1]
    assert caught.value.report["digests_ok"] is False and caught.value.report["id_range_ok"] is False
    assert corpus_dir.is_dir()  # the user's own corpus is never deleted


def test_without_digests_the_id_range_check_still_catches_out_of_vocabulary_ids(corpus_dir, tmp_path):
    CellCorpus(corpus_dir)  # the intact corpus' ids are checked and remembered ...
    _flip_token_high_byte(corpus_dir)  # ... but the damaged file has another stamp: checked again
    with pytest.raises(CorpusError, match=r"tokens.npy holds token ids in \[-\d+, \d+\], outside the vocabulary"):
        _setup(corpus_dir, tmp_path, verify_digests=False)
    with pytest.raises(CorpusError, match="outside the vocabulary") as caught:
        verify_corpus(corpus_dir, check_digests=False)
    assert caught.value.report["digests_ok"] is None


def test_in_vocabulary_flip_is_caught_by_digests_only(corpus_dir, tmp_path):
    """A low-byte flip turns one gene into another: only the digest check can see it."""
    _flip(corpus_dir / "tokens.npy", NPY_HEADER, 0x01)
    assert len(_setup(corpus_dir, tmp_path, verify_digests=False).corpus) == 48
    with pytest.raises(CorpusError, match="tokens.npy does not match its blake3 digest"):
        _setup(corpus_dir, tmp_path)


def test_truncated_file_refused(corpus_dir, tmp_path):
    tokens = corpus_dir / "tokens.npy"
    size = tokens.stat().st_size
    os.truncate(tokens, size - 7)
    with pytest.raises(CorpusError, match=f"tokens.npy has {size - 7} bytes, the manifest says {size}"):
        _setup(corpus_dir, tmp_path, verify_digests=False)
    with pytest.raises(CorpusError, match="tokens.npy has"):
        verify_corpus(corpus_dir)


def test_decreasing_offsets_refused_on_open(corpus_dir):
    offsets = corpus_dir / "offsets.npy"
    values = np.load(offsets)
    with open(offsets, "r+b") as handle:  # cell 5 starts after cell 6: same size, same header
        handle.seek(NPY_HEADER + 6 * 8)
        handle.write(np.int64(values[7] + 1).tobytes())
    with pytest.raises(CorpusError, match="offsets.npy decreases at 1 cell"):
        CellCorpus(corpus_dir)


def test_id_range_is_checked_once_per_corpus(corpus_dir, monkeypatch):
    calls = []
    original = CellCorpus.token_id_range
    monkeypatch.setattr(CellCorpus, "token_id_range", lambda self: calls.append(1) or original(self))
    CellCorpus(corpus_dir)
    CellCorpus(corpus_dir)
    pickle.loads(pickle.dumps(CellCorpus(corpus_dir)))  # a DataLoader worker's copy
    assert len(calls) == 1
    monkeypatch.setattr(corpus_module, "_CHECKED_IDS", {})  # a new process: the record on disk is used
    CellCorpus(corpus_dir)
    assert len(calls) == 1
    assert len(list((Path(os.environ["LANGCELL_CACHE"]) / "checked_token_ids").glob("*.json"))) == 1
    _flip(corpus_dir / "tokens.npy", NPY_HEADER, 0x01)  # new file stamp: checked again
    CellCorpus(corpus_dir)
    assert len(calls) == 2


def test_digests_are_not_rehashed_by_dataloader_workers(corpus_dir, monkeypatch):
    corpus = CellCorpus(corpus_dir, verify_digests=True)
    hashed = []
    monkeypatch.setattr(corpus_module, "file_digest", lambda *args, **kwargs: hashed.append(args))
    copy = pickle.loads(pickle.dumps(corpus))
    assert hashed == [] and len(copy) == len(corpus)


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "missing_manifest_file"])
def test_damaged_cache_entry_is_named_and_rebuilt(tmp_path, damage):
    first = _setup(CELLS, tmp_path)
    entry = first.corpus_path()
    expected = np.asarray(first.corpus.tokens).copy()
    assert entry.parent == tmp_path / "cache" and len(first.corpus) == 48
    if damage == "flipped_byte":
        _flip(entry / "tokens.npy", NPY_HEADER, 0x01)  # another gene: only the digest sees it
    elif damage == "truncated":
        os.truncate(entry / "tokens.npy", NPY_HEADER + 10)
    else:
        (entry / "offsets.npy").unlink()
    with pytest.warns(UserWarning, match=f"Cached corpus {entry} is damaged and is rebuilt"):
        second = _setup(CELLS, tmp_path)
    assert second.corpus_path() == entry
    np.testing.assert_array_equal(np.asarray(second.corpus.tokens), expected)
    assert verify_corpus(entry)["problems"] == []
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # nothing left aside


def test_failed_id_record_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def cannot_rename(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", cannot_rename)
    record = tmp_path / "checked_token_ids" / "abc.json"
    corpus_module._write_record(record, ("abc", 25427), {"low": 2, "high": 25000})  # a cache: failure is skipped
    assert list(record.parent.iterdir()) == []


def test_digests_are_verified_once_per_file_stamp(corpus_dir, monkeypatch):
    """Every rank / re-open of an unchanged corpus skips the digest pass; a rewritten file is re-hashed."""
    hashed = []
    original = corpus_module.file_digest
    monkeypatch.setattr(corpus_module, "file_digest", lambda path, *a, **k: hashed.append(Path(path).name)
                        or original(path, *a, **k))
    n_files = len(CellCorpus(corpus_dir).manifest["files"])
    CellCorpus(corpus_dir, verify_digests=True)
    assert len(hashed) == n_files
    CellCorpus(corpus_dir, verify_digests=True)
    monkeypatch.setattr(corpus_module, "_VERIFIED_DIGESTS", set())  # a new process: the records on disk are used
    CellCorpus(corpus_dir, verify_digests=True)
    assert len(hashed) == n_files
    assert len(list((Path(os.environ["LANGCELL_CACHE"]) / "verified_digests").glob("*.json"))) == n_files
    _flip(corpus_dir / "tokens.npy", NPY_HEADER, 0x01)  # in-vocabulary damage, new file stamp
    with pytest.raises(CorpusError, match="tokens.npy does not match its blake3 digest"):
        CellCorpus(corpus_dir, verify_digests=True)
    assert hashed[n_files:] == ["tokens.npy"]
    with pytest.raises(CorpusError, match="tokens.npy does not match"):
        CellCorpus(corpus_dir).verify_digests()  # the explicit check always re-hashes
