"""Damaged corpora are refused; outputs are never clobbered; stale temporaries are cleaned."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from lightning_langcell.data import CellCorpus, tokenize_to_corpus
from lightning_langcell.data.corpus_store import LOCK_NAME, remove_stale_temporaries
from lightning_langcell.errors import CorpusError, LangCellInputError


@pytest.fixture(scope="module")
def pristine(pbmc_files, tokenizer, tmp_path_factory):
    output = tmp_path_factory.mktemp("pristine") / "pbmc"
    tokenize_to_corpus(list(pbmc_files), output, tokenizer=tokenizer)
    return output


@pytest.fixture()
def copy(pristine, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(pristine, target)
    return target


def _rewrite(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_missing_file_refused(copy):
    codes = next(name for name in json.loads((copy / "manifest.json").read_text())["files"] if "codes" in name)
    os.remove(copy / codes)
    with pytest.raises(CorpusError, match="missing"):
        CellCorpus(copy)


def test_truncated_tokens_refused(copy):
    with open(copy / "tokens.npy", "r+b") as handle:
        handle.truncate(os.path.getsize(copy / "tokens.npy") - 2)
    with pytest.raises(CorpusError, match="tokens.npy has .* bytes"):
        CellCorpus(copy)


def test_inconsistent_offsets_refused(copy):
    offsets = np.load(copy / "offsets.npy")
    offsets[-1] -= 1
    with open(copy / "offsets.npy", "r+b") as handle:  # same size, same header
        handle.seek(os.path.getsize(copy / "offsets.npy") - 8)
        handle.write(offsets[-1:].tobytes())
    with pytest.raises(CorpusError, match="offsets.npy does not span"):
        CellCorpus(copy)


def test_wrong_cell_count_refused(copy):
    _rewrite(copy, lambda m: m.update(n_cells=m["n_cells"] - 1))
    with pytest.raises(CorpusError, match="do not hold"):
        CellCorpus(copy)


def test_flipped_byte_found_by_verify(copy):
    with open(copy / "tokens.npy", "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 1]))
    corpus = CellCorpus(copy)  # opening is cheap: sizes only
    with pytest.raises(CorpusError, match="tokens.npy does not match its blake3 digest"):
        corpus.verify()


def test_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="no manifest.json"):
        CellCorpus(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(CorpusError, match="not a lightning_langcell.cell_corpus manifest"):
        CellCorpus(tmp_path)


def test_future_format_refused(copy):
    _rewrite(copy, lambda m: m.update(format_version=99))
    with pytest.raises(CorpusError, match="version 99"):
        CellCorpus(copy)


def test_output_protection(pbmc_files, tokenizer, stand_in, tmp_path, pristine):
    user_dir = tmp_path / "results"
    user_dir.mkdir()
    (user_dir / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(CorpusError, match="not a tokenized-cell corpus; it is never overwritten"):
            tokenize_to_corpus(pbmc_files[0], user_dir, tokenizer=tokenizer, overwrite=overwrite)
    assert (user_dir / "precious.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CorpusError, match="not a directory"):
        tokenize_to_corpus(pbmc_files[0], a_file, tokenizer=tokenizer)

    target = tmp_path / "corpus"
    shutil.copytree(pristine, target)
    with pytest.raises(CorpusError, match="already exists"):
        tokenize_to_corpus(pbmc_files[0], target, tokenizer=tokenizer)
    with pytest.raises(LangCellInputError, match="both"):
        tokenize_to_corpus(pbmc_files[0], target, tokenizer=tokenizer, overwrite=True, append=True)
    assert len(CellCorpus(target)) == 49
    replaced = tokenize_to_corpus(pbmc_files[0], target, tokenizer=tokenizer, overwrite=True)
    assert len(replaced) == 24 and len(replaced.sources) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus.")]  # no leftovers

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(tokenize_to_corpus(pbmc_files[1], empty, tokenizer=tokenizer)) == 25


def test_missing_input(tokenizer, tmp_path):
    with pytest.raises(LangCellInputError, match="not found"):
        tokenize_to_corpus([str(tmp_path / "nope.h5ad")], tmp_path / "c", tokenizer=tokenizer)
    assert not (tmp_path / "c").exists()


def test_failed_write_leaves_nothing(pbmc_files, stand_in, tmp_path):
    broken = stand_in(vocab_size=100)  # ids up to 766 do not fit a 100-id vocabulary
    with pytest.raises(CorpusError, match="outside the vocabulary"):
        tokenize_to_corpus(pbmc_files[0], tmp_path / "c", tokenizer=broken)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_removed(pbmc_files, tokenizer, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale, alive, unlocked = (tmp_path / f".out.tmp-{suffix}" for suffix in ("dead", "alive", "nolock"))
    for folder, pid in ((stale, dead_pid), (alive, os.getpid())):
        folder.mkdir()
        (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    unlocked.mkdir()
    assert remove_stale_temporaries(tmp_path / "out") == [stale]
    assert alive.exists() and unlocked.exists()  # a live writer's / a fresh unlocked directory
    os.utime(unlocked, (0, 0))
    tokenize_to_corpus(pbmc_files[0], tmp_path / "out", tokenizer=tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-alive", "out"]


def test_incomplete_manifest_refused(copy):
    _rewrite(copy, lambda m: m.pop("files"))
    with pytest.raises(CorpusError, match=r"lacks \['files'\]"):
        CellCorpus(copy)


def test_no_cells_kept(pbmc_files, stand_in, tmp_path):
    import anndata as ad

    cells = ad.read_h5ad(pbmc_files[0])
    cells.obs["filter_pass"] = 0
    cells.write_h5ad(tmp_path / "none.h5ad")
    with pytest.raises(LangCellInputError, match="No cell of .*none.h5ad is left to tokenize: 25 cell"):
        tokenize_to_corpus(str(tmp_path / "none.h5ad"), tmp_path / "c", tokenizer=stand_in())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.h5ad"]  # no 0-cell corpus, no temporary
