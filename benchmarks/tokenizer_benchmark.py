"""Tokenizer speed and memory: ours vs the official algorithm vs a plain per-cell loop.

    python -m benchmarks.tokenizer_benchmark                 # 20,000 cells x 20,000 genes, ~2,000 detected
    python -m benchmarks.tokenizer_benchmark --cells 2000    # quick run
    python -m benchmarks.tokenizer_benchmark --memory-budget-mb 512    # bounded-memory mode
    python -m benchmarks.tokenizer_benchmark --scaling 1000,2000,4000  # + ours vs official per cell count

A seeded h5ad (negative-binomial counts, genes from the vocabulary, ``obs["n_counts"]``) is
written to a temporary folder. Each case runs in its own subprocess, so its peak memory
(peak RSS of the process, ``VmHWM``: interpreter and imports included, ~150 MiB) is its own;
the time covers the work only (h5ad in, token lists out), not the interpreter start, the
imports or the one-off vocabulary load; each case runs ``--repeat`` times (default 5) in its
process and the fastest run is reported. Wall and CPU (user + system) time are both shown;
on a shared machine CPU time is the fairer comparison (``cells/s`` and ``x base`` use it).

Cases: ``ours`` = ``CellTokenizer.tokenize(path)`` (streams the backed file by chunks);
``ours_corpus`` = ``tokenize_to_corpus`` (h5ad -> corpus on disk) when available;
``official_dense`` = the official algorithm (load the AnnData, densify 512 cells at a time,
one ``argsort`` per cell; the official code densifies the whole matrix at once, so its
memory is higher still); ``csr_row_loop`` = a plain Python loop over CSR rows. Every case's
tokens are checked against ours, ties being interchangeable.

Bounded-memory mode: with ``RLIMIT_AS`` set to the budget in a subprocess, streams the
backed file chunk by chunk (``iter_chunks``, tokens discarded, as a corpus writer does) and,
for contrast, loads the whole AnnData; the imports alone take ~220 MiB of address space.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINE = "official_dense"
CASES = ("ours", "ours_corpus", BASELINE, "csr_row_loop")
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


# ---------------------------------------------------------------------------- data
def write_h5ad(path: Path, cells: int, genes: int, detected: int, seed: int) -> None:
    """Cells x genes float32 CSR of negative-binomial counts, ~``detected`` genes per cell."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    from lightning_langcell.tokenization import GeneVocabulary

    rng = np.random.default_rng(seed)
    vocabulary = GeneVocabulary.bundled()
    gene_ids = rng.choice(vocabulary.gene_ids, size=genes, replace=False).astype(str)
    weight = rng.gamma(0.6, size=genes)
    p_detect = np.clip(weight / weight.sum() * detected, 0, 0.95)
    mean = rng.lognormal(0.0, 1.0, size=genes)
    blocks = []
    for start in range(0, cells, 1000):
        n = min(1000, cells - start)
        hit = rng.random((n, genes), dtype=np.float32) < p_detect.astype(np.float32)
        row, col = np.nonzero(hit)
        size_factor = rng.lognormal(0.0, 0.5, size=n)[row]
        mu = mean[col] * size_factor
        counts = 1 + rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
        blocks.append(sp.csr_matrix((counts.astype(np.float32), (row, col)), shape=(n, genes)))
    x = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {"n_counts": np.asarray(x.sum(axis=1), dtype=np.float64).ravel(), "filter_pass": 1},
        index=[f"cell_{i}" for i in range(cells)],
    )
    var = pd.DataFrame({"ensembl_id": gene_ids}, index=gene_ids)
    anndata.AnnData(X=x, obs=obs, var=var).write_h5ad(path)


# ---------------------------------------------------------------------------- cases
def _official_inputs(path: str):
    """In-memory AnnData + per-column vocabulary position (-1: not tokenised), as the official code."""
    import anndata

    from lightning_langcell.tokenization import GeneVocabulary

    vocabulary = GeneVocabulary.bundled()
    adata = anndata.read_h5ad(path)
    index = vocabulary.gene_index
    column_gene = np.array([index.get(g, -1) for g in adata.var["ensembl_id"]], dtype=np.int64)
    return adata, vocabulary, column_gene


def run_official_dense(path: str, max_genes: int = 2048, chunk: int = 512) -> list[np.ndarray]:
    adata, vocabulary, column_gene = _official_inputs(path)
    coding = np.flatnonzero(column_gene >= 0)
    medians = vocabulary.gene_medians[column_gene[coding]]
    tokens_of = vocabulary.gene_token_ids[column_gene[coding]]
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    x = adata.X[:, coding]
    out = []
    for start in range(0, adata.n_obs, chunk):
        dense = x[start : start + chunk].toarray().T  # genes x cells
        values = dense / n_counts[start : start + chunk] * 10000 / medians[:, None]
        for j in range(values.shape[1]):
            nonzero = np.flatnonzero(values[:, j])
            order = np.argsort(-values[nonzero, j])
            out.append(tokens_of[nonzero][order][:max_genes].astype(np.int32))
    return out


def run_csr_row_loop(path: str, max_genes: int = 2048) -> list[np.ndarray]:
    adata, vocabulary, column_gene = _official_inputs(path)
    x = adata.X.tocsr()
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    data, indices, indptr = x.data, x.indices, x.indptr
    out = []
    for i in range(x.shape[0]):
        gene = column_gene[indices[indptr[i] : indptr[i + 1]]]
        mapped = gene >= 0
        gene = gene[mapped]
        values = data[indptr[i] : indptr[i + 1]][mapped] / n_counts[i] * 10000 / vocabulary.gene_medians[gene]
        order = np.argsort(-values, kind="stable")[:max_genes]
        out.append(vocabulary.gene_token_ids[gene[order]])
    return out


def run_ours(path: str, chunk_size: int) -> list[np.ndarray]:
    from lightning_langcell.tokenization import CellTokenizer

    return CellTokenizer(chunk_size=chunk_size).tokenize(path)


def corpus_output(path: str) -> Path:
    """Where ``ours_corpus`` writes; removed before each timed repeat (a fresh write each time)."""
    return Path(path).with_suffix(".corpus")


def run_ours_corpus(path: str, chunk_size: int):
    """h5ad -> corpus on disk; returns a loader of the tokens, called after the timing."""
    from lightning_langcell.data.corpus import CellCorpus
    from lightning_langcell.data.corpus_writer import tokenize_to_corpus
    from lightning_langcell.tokenization import CellTokenizer

    output = corpus_output(path)
    tokenize_to_corpus(path, output, CellTokenizer(chunk_size=chunk_size))

    def load() -> list[np.ndarray]:
        corpus = CellCorpus(output)
        return [np.asarray(corpus[i].input_ids) for i in range(len(corpus))]

    return load


def forget_input_digests() -> None:
    """Drop the corpus writer's per-process cache of input digests (a repeat must hash again)."""
    from lightning_langcell.data import corpus_writer

    corpus_writer._DIGESTS.clear()


def run_streaming_count(path: str, chunk_size: int) -> list[np.ndarray]:
    """Stream chunks and keep only lengths (the memory-budget mode)."""
    from lightning_langcell.tokenization import CellTokenizer

    lengths = [chunk.lengths for chunk in CellTokenizer(chunk_size=chunk_size).iter_chunks(path)]
    return [np.concatenate(lengths)]


def run_load_whole(path: str, chunk_size: int) -> list[np.ndarray]:
    """Load the whole AnnData in memory (what a non-streaming tokenizer does first)."""
    import anndata

    adata = anndata.read_h5ad(path)
    return [np.asarray(adata.X.sum(axis=1)).ravel()]


def peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would include the parent's
    peak inherited across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(case: str, path: str, out: str, chunk_size: int, budget_mb: int | None, repeat: int = 1) -> None:
    """Run one case ``repeat`` times in this process (fastest time kept); print one JSON line;
    save the tokens to ``out`` (.npz)."""
    if budget_mb:
        limit = budget_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import anndata  # noqa: F401  (imports and the one-off vocabulary load are not timed)

    from lightning_langcell.tokenization import GeneVocabulary

    GeneVocabulary.bundled()

    runners = {
        "ours": lambda: run_ours(path, chunk_size),
        "ours_corpus": lambda: run_ours_corpus(path, chunk_size),
        BASELINE: lambda: run_official_dense(path),
        "csr_row_loop": lambda: run_csr_row_loop(path),
        "stream_lengths": lambda: run_streaming_count(path, chunk_size),
        "load_whole": lambda: run_load_whole(path, chunk_size),
    }
    seconds = cpu_seconds = float("inf")
    for _ in range(repeat):
        tokens = None  # free the previous run's output first
        if case == "ours_corpus":  # each repeat writes a new corpus and hashes the input, as a first run does
            shutil.rmtree(corpus_output(path), ignore_errors=True)
            os.sync()  # the previous repeat's deleted output is not flushed inside this repeat's timing
            forget_input_digests()
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            tokens = runners[case]()
        except MemoryError:
            print(json.dumps({"case": case, "error": "MemoryError"}))
            return
        seconds = min(seconds, time.perf_counter() - start)
        cpu_seconds = min(cpu_seconds, time.process_time() - cpu_start)
    peak_mib = peak_rss_mib()
    if callable(tokens):  # read back for the check, outside the timing and the peak
        tokens = tokens()
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    np.savez(out, flat=np.concatenate(tokens) if tokens else np.zeros(0, np.int32), lengths=lengths)
    print(json.dumps({"case": case, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_mib, "cells": len(tokens)}))


def run_child(case: str, path: Path, chunk_size: int, budget_mb: int | None = None, repeat: int = 1) -> dict:
    out = path.with_name(f"{case}.npz")
    command = [sys.executable, "-m", "benchmarks.tokenizer_benchmark", "--child", case, "--file", str(path),
               "--out", str(out), "--chunk-size", str(chunk_size), "--repeat", str(repeat)]
    if budget_mb:
        command += ["--memory-budget-mb", str(budget_mb)]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"case": case, "error": f"exit {done.returncode}: {tail}"}
    return {**json.loads(lines[-1]), "tokens": out}


# ---------------------------------------------------------------------------- checks
def load_tokens(npz: Path) -> list[np.ndarray]:
    with np.load(npz) as saved:
        return np.split(saved["flat"], np.cumsum(saved["lengths"])[:-1])


def cells_differing(path: Path, reference: list[np.ndarray], other: list[np.ndarray]) -> int:
    """Cells whose tokens differ from ``reference`` other than by the order of tied genes."""
    from lightning_langcell.tokenization import CellTokenizer, same_ranking
    from lightning_langcell.tokenization.cell_source import CellSource

    if len(reference) != len(other):
        return max(len(reference), len(other))
    vocabulary = CellTokenizer().vocabulary
    differing = 0
    with CellSource(str(path)) as source:
        token_of_column = np.array([vocabulary.gene_token_id[g] for g in source.var["ensembl_id"]])
        for i, (a, b) in enumerate(zip(reference, other)):
            if np.array_equal(a, b):
                continue
            row = source.read_rows(i, i + 1)
            count = dict(zip(token_of_column[row.indices], row.data))
            values = [count[t] / source.obs["n_counts"].iloc[i] * 10000 / vocabulary.median_by_token[t] for t in a]
            differing += not same_ranking(a, b, values)
    return differing


# ---------------------------------------------------------------------------- main
def summarize(rows: list[dict], cells: int) -> list[dict]:
    """Child results -> report rows: times (s), rates (cells/s) and ratios to the baseline from CPU
    time (fairer on a shared machine) and from wall time; ``ratio`` is None without a baseline."""
    base = next((r for r in rows if r["case"] == BASELINE and "seconds" in r), None)
    summary = []
    for r in rows:
        if "seconds" not in r:
            summary.append({"case": r["case"], "error": r.get("error", "skipped")})
            continue
        summary.append({
            "case": r["case"], "cells": cells, "wall_s": r["seconds"], "cpu_s": r["cpu_seconds"],
            "cells_per_s": cells / r["cpu_seconds"],
            "ratio": base["cpu_seconds"] / r["cpu_seconds"] if base else None,
            "cells_per_s_wall": cells / r["seconds"],
            "ratio_wall": base["seconds"] / r["seconds"] if base else None,
            "peak_mib": r["peak_mib"], "check": r.get("check", ""),
        })
    return summary


def print_table(summary: list[dict]) -> None:
    """One line per row of ``summarize``."""
    print(f"\n{'case':<14}{'cells':>7}{'wall s':>8}{'cpu s':>8}{'cells/s':>9}{'x base':>8}"
          f"{'wall cells/s':>14}{'x base':>8}{'peak MiB':>10}  tokens")
    for r in summary:
        if "error" in r:
            print(f"{r['case']:<14}  {r['error']}")
            continue
        ratio, wall_ratio = ("-" if x is None else f"{x:.1f}" for x in (r["ratio"], r["ratio_wall"]))
        print(f"{r['case']:<14}{r['cells']:>7}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['cells_per_s']:>9,.0f}"
              f"{ratio:>8}{r['cells_per_s_wall']:>14,.0f}{wall_ratio:>8}{r['peak_mib']:>10.0f}  {r['check']}")


SCALING_CASES = ("ours", BASELINE)


def scaling_mode(folder: Path, counts: list[int], args: argparse.Namespace) -> list[dict]:
    """For each cell count, a fresh h5ad (same genes/detected/seed) and one run of each of
    ``SCALING_CASES`` in its own subprocess; rates from CPU time."""
    scaling = []
    for cells in counts:
        path = folder / f"scaling_{cells}" / "cells.h5ad"  # own folder: the children's .npz do not collide
        path.parent.mkdir()
        write_h5ad(path, cells, args.genes, args.detected, args.seed)
        for case in SCALING_CASES:
            r = run_child(case, path, args.chunk_size, repeat=1)
            scaling.append({"case": case, "cells": cells, "error": r["error"]} if "error" in r else {
                "case": case, "cells": cells, "cells_per_s": cells / r["cpu_seconds"],
                "cpu_s": r["cpu_seconds"], "peak_mib": r["peak_mib"]})
    return scaling


def print_scaling(scaling: list[dict]) -> None:
    """cells | ours cells/s | official cells/s | ratio (CPU time)."""
    print(f"\n{'cells':>8} | {'ours cells/s':>12} | {'official cells/s':>16} | {'ratio':>5}")
    for cells in dict.fromkeys(r["cells"] for r in scaling):
        rate = {r["case"]: r.get("cells_per_s") for r in scaling if r["cells"] == cells}
        ours, official = rate.get("ours"), rate.get(BASELINE)
        ratio = f"{ours / official:.1f}" if ours and official else "-"
        print(f"{cells:>8} | {ours or 0:>12,.0f} | {official or 0:>16,.0f} | {ratio:>5}")


def memory_budget_mode(path: Path, budget_mb: int, chunk_size: int) -> list[dict]:
    """Each bounded case's child result (``seconds``, ``peak_mib``...) or ``error``."""
    size_mib = path.stat().st_size / 2**20
    print(f"\nMemory budget {budget_mb} MiB of address space (RLIMIT_AS), h5ad {size_mib:.0f} MiB, chunk {chunk_size} cells:")
    results = []
    for case in ("stream_lengths", "load_whole"):
        r = run_child(case, path, chunk_size, budget_mb)
        outcome = f"ok, {r['seconds']:.2f} s, peak RSS {r['peak_mib']:.0f} MiB" if "seconds" in r else f"FAILED ({r['error']})"
        print(f"  {case:<15} {outcome}")
        results.append({k: v for k, v in r.items() if k != "tokens"})
    return results


def _corpus_available() -> bool:
    try:
        return importlib.util.find_spec("lightning_langcell.data.corpus_writer") is not None
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> dict | None:
    """Run the benchmark; returns ``{"settings", "rows", "scaling"}`` (``{"settings",
    "memory_budget"}`` in bounded-memory mode; None in a child process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=20000)
    parser.add_argument("--detected", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the fastest is reported")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="run the bounded-memory mode instead")
    parser.add_argument("--scaling", default="", help="comma-separated cell counts: ours vs official at each (off if empty)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.file, args.out, args.chunk_size, args.memory_budget_mb, args.repeat)
    settings = {k: getattr(args, k) for k in ("cells", "genes", "detected", "repeat", "chunk_size", "seed")}
    scaling_counts = [n.strip() for n in args.scaling.split(",") if n.strip()]
    if not all(n.isdigit() and int(n) > 0 for n in scaling_counts):
        parser.error(f"--scaling {args.scaling!r}: give positive cell counts separated by commas, e.g. 1000,2000,4000")
    scaling_counts = [int(n) for n in scaling_counts]
    with tempfile.TemporaryDirectory(prefix="tokenizer_benchmark_") as tmp:
        path = Path(tmp) / "cells.h5ad"
        start = time.perf_counter()
        write_h5ad(path, args.cells, args.genes, args.detected, args.seed)
        print(f"wrote {args.cells} x {args.genes} h5ad ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s")
        if args.memory_budget_mb:
            return {"settings": settings, "memory_budget": memory_budget_mode(path, args.memory_budget_mb, args.chunk_size)}
        rows = [
            run_child(case, path, args.chunk_size, repeat=args.repeat)
            if case != "ours_corpus" or _corpus_available()
            else {"case": case, "error": "skipped: lightning_langcell.data.corpus_writer is not importable"}
            for case in args.cases.split(",")
        ]
        reference = next((load_tokens(r["tokens"]) for r in rows if r["case"] == "ours" and "tokens" in r), None)
        for r in rows:
            if "tokens" in r and reference is not None:
                bad = cells_differing(path, reference, load_tokens(r["tokens"]))
                same = "reference" if r["case"] == "ours" else "same as ours (modulo ties)"
                r["check"] = same if bad == 0 else f"{bad} cells DIFFER"
        summary = summarize(rows, args.cells)
        print_table(summary)
        scaling = scaling_mode(Path(tmp), scaling_counts, args) if scaling_counts else []
        if scaling:
            print_scaling(scaling)
    return {"settings": settings, "rows": summary, "scaling": scaling}


if __name__ == "__main__":
    main()
