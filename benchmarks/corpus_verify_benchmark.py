"""Cost of the corpus integrity checks, in reads of the corpus.

    python -m benchmarks.corpus_verify_benchmark                  # 200,000 cells x ~1,000 tokens
    python -m benchmarks.corpus_verify_benchmark --cells 20000    # quick run

A seeded synthetic corpus (token ids uniform over the 25,427-id vocabulary, cell lengths
uniform in [mean/2, 3*mean/2]) is written by the corpus writer into a temporary folder,
removed afterwards; the id checks remember their results under a temporary ``LANGCELL_CACHE``
(the caller's value is restored). Files are in the page cache (just written): from a cold disk
every case that reads the whole corpus is bounded by the disk instead.

Cases, run interleaved ``--repeat`` times in one process (the fastest kept):

- ``read_corpus`` (baseline): every corpus file read once, sequentially, into a reused buffer;
- ``open_structure``: ``CellCorpus(path, check_ids=False)`` (manifest, sizes, headers, offsets);
- ``open_id_check_first``: ``CellCorpus(path)`` with the token-id range check not yet done
  (the tokens file's stamp is changed first, so nothing remembered applies);
- ``open_id_check_remembered``: ``CellCorpus(path)`` again (the check's result is remembered);
- ``digest_pass``: every file's BLAKE3 digest against the manifest (``verify_digests=True``);
- ``verify_corpus``: the full check of the ``verify`` command.

Each row: ``seconds``, ``mb_per_s`` (corpus bytes / seconds) and ``ratio`` = seconds / the
baseline's seconds, i.e. how many reads of the corpus the check costs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BASELINE = "read_corpus"
CASES = (BASELINE, "open_structure", "open_id_check_first", "open_id_check_remembered", "digest_pass",
         "verify_corpus")
VOCAB_SIZE = 25_427  # the LangCell gene vocabulary's size: int16 tokens, as a real corpus
CHUNK_CELLS = 20_000
READ_BLOCK = 1 << 22  # the digest's read block, so the baseline reads the same way


def write_synthetic_corpus(target: Path, cells: int, mean_length: int, seed: int,
                           categories: dict[str, list[str]] | None = None,
                           lengths: np.ndarray | None = None) -> None:
    """``cells`` cells of random token ids through the corpus writer (one synthetic source).

    ``categories``: categorical obs columns to add, each value drawn uniformly from its list
    (after the tokens of each chunk, so the tokens do not depend on it). ``lengths``: the genes of
    each cell (instead of uniform in [mean/2, 3*mean/2]).
    """
    import pandas as pd

    from lightning_langcell.data.corpus import DIGEST
    from lightning_langcell.data.corpus_writer import _write

    categories = categories or {}
    rng = np.random.default_rng(seed)
    vocabulary = {"vocabulary_checksum": "synthetic", "vocab_size": VOCAB_SIZE,
                  "tokenizer_settings": {"synthetic": True}}

    def fill(writer) -> None:
        code = writer.add_source({"path": "synthetic", "bytes": 0, DIGEST: None})
        for start in range(0, cells, CHUNK_CELLS):
            n = min(CHUNK_CELLS, cells - start)
            if lengths is None:
                chunk_lengths = rng.integers(mean_length // 2, mean_length * 3 // 2 + 1, n)
            else:
                chunk_lengths = np.asarray(lengths[start : start + n])
            flat = rng.integers(2, VOCAB_SIZE, int(chunk_lengths.sum()), dtype=np.int16)
            columns = {name: pd.Categorical.from_codes(rng.integers(0, len(values), n), values)
                       for name, values in categories.items()}
            writer.add_cells(flat, chunk_lengths, columns, np.full(n, code), np.arange(start, start + n),
                             [f"cell_{i}" for i in range(start, start + n)])
        writer.sources[code].update(n_cells=cells, n_skipped=0)

    _write(target, False, vocabulary, [(name, "categorical") for name in categories], fill)


def corpus_files(path: Path) -> list[Path]:
    """The files the manifest lists (what the digest pass reads)."""
    from lightning_langcell.data.corpus import read_manifest

    return [path / name for name in read_manifest(path)["files"]]


def read_files(files: list[Path], buffer: bytearray) -> int:
    """Read every file once into ``buffer`` (reused); returns the bytes read."""
    view, total = memoryview(buffer), 0
    for file in files:
        with open(file, "rb", buffering=0) as handle:
            while read := handle.readinto(view):
                total += read
    return total


def restamp(path: Path) -> None:
    """Give the tokens file a new modification time: a remembered id check no longer applies."""
    from lightning_langcell.data.corpus import TOKENS_FILE

    tokens = path / TOKENS_FILE
    stamp = tokens.stat().st_mtime_ns + 1_000_000
    os.utime(tokens, ns=(stamp, stamp))


@contextmanager
def cache_in(folder: Path):
    """``LANGCELL_CACHE`` set to ``folder`` inside the block, the previous value restored after."""
    previous = os.environ.get("LANGCELL_CACHE")
    os.environ["LANGCELL_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LANGCELL_CACHE", None)
        else:
            os.environ["LANGCELL_CACHE"] = previous


def time_cases(path: Path, repeat: int) -> tuple[dict[str, float], dict[str, str], dict]:
    """Best-of-``repeat`` seconds of each case (interleaved), what each check found (one line
    per case) and the last ``verify_corpus`` report."""
    from lightning_langcell.data.corpus import CellCorpus
    from lightning_langcell.data.corpus_verify import verify_corpus

    files, buffer = corpus_files(path), bytearray(READ_BLOCK)
    found: dict[str, str] = {}
    reports: dict[str, dict] = {}

    def read_corpus():
        found[BASELINE] = f"{read_files(files, buffer):,} bytes"

    def open_id_check_first():
        CellCorpus(path)  # raises CorpusError when an id is outside the vocabulary
        found["open_id_check_first"] = "ids within the vocabulary"

    def digest_pass():
        problems = CellCorpus(path, check_ids=False).digest_problems()
        found["digest_pass"] = "; ".join(problems) or "every digest matches"

    def full_verify():
        report = verify_corpus(path)  # raises CorpusError listing the problems
        found["verify_corpus"] = f"ok, ids in {report['token_id_range']}"
        reports["verify_corpus"] = report

    found["open_structure"] = found["open_id_check_remembered"] = "opened"  # else CorpusError
    runs = {
        BASELINE: read_corpus,
        "open_structure": lambda: CellCorpus(path, check_ids=False),
        "open_id_check_first": open_id_check_first,
        "open_id_check_remembered": lambda: CellCorpus(path),
        "digest_pass": digest_pass,
        "verify_corpus": full_verify,
    }
    best = dict.fromkeys(CASES, float("inf"))
    for _ in range(repeat):
        for case in CASES:
            if case == "open_id_check_first":
                restamp(path)
            started = time.perf_counter()
            runs[case]()
            best[case] = min(best[case], time.perf_counter() - started)
    return best, found, reports["verify_corpus"]


def summarize(best: dict[str, float], found: dict[str, str], corpus_bytes: int) -> list[dict]:
    """One row per case: seconds, MB/s over the corpus bytes, ratio to the baseline's seconds."""
    base = best[BASELINE]
    return [{"case": case, "seconds": best[case], "mb_per_s": corpus_bytes / 1e6 / best[case],
             "ratio": best[case] / base, "check": found.get(case, "")} for case in CASES]


def print_table(rows: list[dict]) -> None:
    print(f"\n{'case':<26}{'seconds':>10}{'MB/s':>12}{'x read':>9}  check")
    for row in rows:
        print(f"{row['case']:<26}{row['seconds']:>10.4f}{row['mb_per_s']:>12,.0f}{row['ratio']:>9.3f}  {row['check']}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns ``{"settings", "corpus_bytes", "rows", "verify_report"}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--mean-length", type=int, default=1000, help="mean tokens per cell")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case, interleaved; the fastest is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cells < 1 or args.mean_length < 2 or args.repeat < 1:
        parser.error("--cells and --repeat must be at least 1 and --mean-length at least 2")
    settings = {k: getattr(args, k) for k in ("cells", "mean_length", "repeat", "seed")}
    with tempfile.TemporaryDirectory(prefix="corpus_verify_benchmark_") as tmp:
        path = Path(tmp) / "corpus"
        with cache_in(Path(tmp) / "cache"):
            started = time.perf_counter()
            write_synthetic_corpus(path, args.cells, args.mean_length, args.seed)
            corpus_bytes = sum(file.stat().st_size for file in corpus_files(path))
            print(f"wrote {args.cells:,} cells ({corpus_bytes / 1e6:,.0f} MB) in {time.perf_counter() - started:.1f} s")
            best, found, report = time_cases(path, args.repeat)
    rows = summarize(best, found, corpus_bytes)
    print_table(rows)
    return {"settings": settings, "corpus_bytes": corpus_bytes, "rows": rows, "verify_report": report}


if __name__ == "__main__":
    main()
