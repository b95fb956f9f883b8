"""A tokenize run killed with SIGKILL at random points leaves no corpus behind; a rerun matches."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_langcell.data import CellCorpus, tokenize_to_corpus

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")

CHUNK = 4
# Tokenizes argv[1:-1] into argv[-1], printing "chunk" before handing each chunk to the writer.
CHILD = """
import sys, time
from lightning_langcell.data.corpus_writer import tokenize_to_corpus
from lightning_langcell.tokenization import CellTokenizer

class Chatty:
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def iter_chunks(self, item, chunk_size=None):
        for chunk in self.inner.iter_chunks(item, chunk_size=chunk_size):
            print("chunk", flush=True)
            time.sleep(0.02)
            yield chunk

print("ready", flush=True)
tokenize_to_corpus(sys.argv[1:-1], sys.argv[-1], tokenizer=Chatty(CellTokenizer()), chunk_size=%d)
print("done", flush=True)
""" % CHUNK


def _kill_during(inputs, output: Path, repo_root: Path, after_chunks: int | None, delay: float) -> int:
    """Start the child; SIGKILL it after ``after_chunks`` chunk lines (or ``delay`` s after
    "ready"). Returns the number of chunk lines seen."""
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *inputs, str(output)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen = 0
    try:
        for line in child.stdout:
            if line.strip() == "ready" and after_chunks is None:
                time.sleep(delay)
                break
            seen += line.strip() == "chunk"
            if after_chunks is not None and seen >= after_chunks:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return seen


def _assert_absent_or_complete(output: Path, reference: CellCorpus) -> None:
    if not output.exists():
        return
    corpus = CellCorpus(output)  # a corpus there must be the complete one
    corpus.verify()
    for name in reference.manifest["files"]:
        assert (output / name).read_bytes() == (reference.path / name).read_bytes()


def test_killed_runs_leave_no_corpus(pbmc_files, tokenizer, tmp_path, repo_root):
    reference = tokenize_to_corpus(list(pbmc_files), tmp_path / "reference", tokenizer=tokenizer, chunk_size=CHUNK)
    n_chunks = sum(1 for path in pbmc_files for _ in tokenizer.iter_chunks(path, chunk_size=CHUNK))
    output = tmp_path / "out"
    rng = random.Random(0)
    kill_points = sorted(rng.sample(range(1, n_chunks - 2), 3)) + [None]
    for after in kill_points:
        seen = _kill_during(pbmc_files, output, repo_root, after, delay=rng.uniform(0.0, 0.3))
        if after is not None:
            assert seen == after
            assert not output.exists()  # killed mid-stream: nothing at the target
        _assert_absent_or_complete(output, reference)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert leftovers  # killed writers left their temporary directories beside the target

    rerun = tokenize_to_corpus(list(pbmc_files), output, tokenizer=tokenizer, chunk_size=CHUNK, overwrite=True)
    for name in reference.manifest["files"]:
        assert (rerun.path / name).read_bytes() == (reference.path / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]  # stale ones removed
