"""The data path at corpus scale: open, data module setup, memory, first batch and loader throughput.

    python -m benchmarks.data_path_benchmark                          # 1M and 3M cells
    python -m benchmarks.data_path_benchmark --cells 1000000          # one size (~2-3 min)
    python -m benchmarks.data_path_benchmark --cells 1000000,3000000,10000000

Per size, a seeded synthetic corpus (short cells: lengths uniform in [``--mean-genes`` / 2,
3 × ``--mean-genes`` / 2], 20-60 by default; token ids uniform over the 25,427-id vocabulary; a
``cell_type`` column of ``--cell-types`` names) is written into a temporary folder (removed
afterwards) by :func:`benchmarks.corpus_verify_benchmark.write_synthetic_corpus`. Then each rank
runs in a fresh Python process (so its memory baseline is the imports alone), with
pre-training-like settings: texts from ``cell_type``, a 0.9/0.1 train/val split, masked batches of
``--batch-size`` cells, ``verify_digests=False`` (the digest pass, one read of the corpus, is
timed on its own as ``digest_s``). Each process measures:

- ``open_s``: ``CellCorpus(path)`` (ids range-checked once already, as every later open);
- ``setup_s``: ``LangCellDataModule.setup("fit")`` (open, labels, texts, split);
- ``setup_peak_mb``: peak anonymous memory (``RssAnon``, i.e. RSS beyond the memory-mapped
  files, sampled every 2 ms) during setup, above the post-import baseline; ``held_mb`` what is
  still held after setup; ``hwm_mb``: the process' RSS high-water mark (file pages included)
  above the baseline;
- ``first_batch_s_wN``: ``train_dataloader()`` to its first batch with N workers;
- ``cells_per_s_wN`` / ``tokens_per_s_wN``: the next ``--steady-batches`` batches (tokens: real
  cell tokens, ``<cls>`` included).

Ranks: the data module reads world size and rank from its trainer (``_world``); a rank process
gets a stand-in trainer with ``world_size``/``global_rank``. With ``--ranks 1,2`` the two ranks of
the 2-rank case run at the same time (the ``ranks=2`` row has the slower rank's times and the
larger rank's memory). Setup itself does the same work on every rank.

Each measured column is fitted linearly against cells (least squares; through the origin with a
single size) and extrapolated to 27.5M cells, the scLibrary size, beside the targets (setup
≤ 30 s, ≤ 2 GiB per rank beyond the memory map). The loader against the model's pre-training
step is :mod:`benchmarks.loader_vs_model`; ``python -m benchmarks.run --suite data`` runs both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGET_CELLS = 27_500_000
TARGETS = {"setup_s": 30.0, "setup_peak_mb": 2048.0}  # at TARGET_CELLS, per rank
FITTED = ("open_s", "setup_s", "setup_peak_mb", "held_mb", "hwm_mb")
CELL_TYPES = ["T cell", "B cell", "natural killer cell", "monocyte", "dendritic cell", "macrophage", "neutrophil",
              "erythrocyte", "platelet", "mast cell", "plasma cell", "fibroblast", "endothelial cell",
              "epithelial cell", "hepatocyte", "keratinocyte", "neuron", "astrocyte", "oligodendrocyte",
              "microglial cell", "cardiac muscle cell", "smooth muscle cell", "adipocyte", "osteoblast",
              "chondrocyte", "melanocyte", "stem cell", "pericyte", "Schwann cell", "enterocyte"]


# ---------------------------------------------------------------- one rank
def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (this benchmark needs Linux)")


class AnonPeak:
    """Samples ``RssAnon`` in a thread; :attr:`peak_kib` is the largest value seen."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak_kib = interval, _status_kib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("RssAnon"))


def _loader_rates(datamodule, workers: int, steady_batches: int) -> dict:
    """First-batch time and steady cells/s, tokens/s of the train loader with ``workers`` workers."""
    datamodule.hparams.num_workers = workers
    started = time.perf_counter()
    batches = iter(datamodule.train_dataloader())
    next(batches)
    first = time.perf_counter() - started
    cells = tokens = 0
    started = time.perf_counter()
    for _ in range(steady_batches):
        batch = next(batches, None)
        if batch is None:
            break
        cells += int(batch["input_ids"].shape[0])
        tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - started
    del batches  # stops the workers
    return {f"first_batch_s_w{workers}": first, f"steady_cells_w{workers}": cells,
            f"cells_per_s_w{workers}": cells / seconds, f"tokens_per_s_w{workers}": tokens / seconds}


def measure_rank(path: str, rank: int, world: int, batch_size: int, workers: list[int], steady_batches: int) -> dict:
    """One rank's figures (run in a fresh process: the baseline is taken after the imports)."""
    from types import SimpleNamespace

    import lightning.pytorch  # noqa: F401  (in the baseline, as in training)
    import torch  # noqa: F401

    from lightning_langcell.data.corpus import CellCorpus
    from lightning_langcell.data.datamodule import LangCellDataModule

    baseline = _status_kib("RssAnon")
    rss_baseline = _status_kib("VmRSS")
    started = time.perf_counter()
    corpus = CellCorpus(path)
    open_s = time.perf_counter() - started
    del corpus
    datamodule = LangCellDataModule(path, label_column="cell_type", texts=True, batch_size=batch_size,
                                    split=(0.9, 0.1, 0.0), verify_digests=False, mgm_probability=0.15, seed=0)
    datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0,
                                         reload_dataloaders_every_n_epochs=1)
    with AnonPeak() as peak:
        started = time.perf_counter()
        datamodule.setup("fit")
        setup_s = time.perf_counter() - started
    row = {"rank": rank, "open_s": open_s, "setup_s": setup_s,
           "setup_peak_mb": (peak.peak_kib - baseline) / 1024, "held_mb": (_status_kib("RssAnon") - baseline) / 1024,
           "train_cells": len(datamodule.datasets["train"]), "val_cells": len(datamodule.datasets["val"])}
    for count in workers:
        row.update(_loader_rates(datamodule, count, steady_batches))
    row["hwm_mb"] = (_status_kib("VmHWM") - rss_baseline) / 1024
    return row


# ------------------------------------------------------------------ driver
def _rank_command(path: Path, rank: int, world: int, args: argparse.Namespace, workers: list[int]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.data_path_benchmark", "--measure", str(path), "--rank", str(rank),
            "--world", str(world), "--batch-size", str(args.batch_size), "--workers", ",".join(map(str, workers)),
            "--steady-batches", str(args.steady_batches)]


def run_ranks(path: Path, world: int, args: argparse.Namespace, workers: list[int]) -> list[dict]:
    """Run the ``world`` ranks at the same time, each in its own process; their rows."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    processes = [subprocess.Popen(_rank_command(path, rank, world, args, workers), cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in range(world)]
    rows = []
    for rank, process in enumerate(processes):
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"rank {rank}/{world} failed (exit {process.returncode}):\n{err[-4000:]}")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def combine_ranks(cells: int, tokens: int, world: int, rank_rows: list[dict]) -> dict:
    """One row per (size, world): times of the slowest rank, memory of the largest, rates of rank 0."""
    row = {"cells": cells, "tokens": tokens, "ranks": world}
    for key in rank_rows[0]:
        if key == "rank":
            continue
        values = [r[key] for r in rank_rows]
        row[key] = values[0] if key.startswith(("cells_per_s", "tokens_per_s", "steady_cells")) else max(values)
    row["train_cells_all_ranks"] = rank_rows[0]["train_cells"]
    return row


def linear_fit(cells: list[int], values: list[float]) -> tuple[float, float]:
    """(slope per cell, intercept): least squares, or through the origin for one size."""
    x, y = np.asarray(cells, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(np.unique(x)) < 2:
        return float(y.sum() / x.sum()), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def extrapolate(rows: list[dict], at_cells: int = TARGET_CELLS) -> list[dict]:
    """Per (ranks, column): the linear fit against cells and its value at ``at_cells``."""
    fits = []
    for world in sorted({row["ranks"] for row in rows}):
        chosen = [row for row in rows if row["ranks"] == world]
        for column in FITTED:
            slope, intercept = linear_fit([r["cells"] for r in chosen], [r[column] for r in chosen])
            value = slope * at_cells + intercept
            target = TARGETS.get(column)
            fits.append({"ranks": world, "column": column, "per_million_cells": slope * 1e6, "intercept": intercept,
                         "at_cells": at_cells, "extrapolated": value, "target": target,
                         "meets_target": None if target is None else bool(value <= target)})
    return fits


def print_tables(rows: list[dict], fits: list[dict], workers: list[int]) -> None:
    rates = "".join(f"{f'1st w{w}':>9}{f'cells/s w{w}':>14}{f'tok/s w{w}':>14}" for w in workers)
    print(f"\n{'cells':>11}{'ranks':>6}{'open s':>8}{'setup s':>9}{'peak MB':>9}{'held MB':>9}{'hwm MB':>8}{rates}")
    for row in rows:
        line = f"{row['cells']:>11,}{row['ranks']:>6}{row['open_s']:>8.3f}{row['setup_s']:>9.2f}"
        line += f"{row['setup_peak_mb']:>9.0f}{row['held_mb']:>9.0f}{row['hwm_mb']:>8.0f}"
        for w in workers:
            line += f"{row[f'first_batch_s_w{w}']:>9.2f}{row[f'cells_per_s_w{w}']:>14,.0f}{row[f'tokens_per_s_w{w}']:>14,.0f}"
        print(line)
    print(f"\nlinear fit against cells, extrapolated to {TARGET_CELLS:,} cells:")
    print(f"{'ranks':>6}  {'column':<15}{'per 1M cells':>14}{'intercept':>12}{'at 27.5M':>12}{'target':>10}  meets")
    for fit in fits:
        target = "" if fit["target"] is None else f"{fit['target']:.0f}"
        meets = "" if fit["meets_target"] is None else ("yes" if fit["meets_target"] else "NO")
        print(f"{fit['ranks']:>6}  {fit['column']:<15}{fit['per_million_cells']:>14.3f}{fit['intercept']:>12.3f}"
              f"{fit['extrapolated']:>12.2f}{target:>10}  {meets}")


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns ``{"settings", "rows", "fits"}`` (rows: one per size and rank count)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=_int_list, default=[1_000_000, 3_000_000], help="comma-separated sizes")
    parser.add_argument("--mean-genes", type=int, default=40, help="cells have mean/2 to 3*mean/2 genes")
    parser.add_argument("--cell-types", type=int, default=len(CELL_TYPES))
    parser.add_argument("--ranks", type=_int_list, default=[1, 2], help="rank counts (1 and/or 2)")
    parser.add_argument("--workers", type=_int_list, default=[0, 2], help="loader worker counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steady-batches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one rank of this corpus
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        row = measure_rank(args.measure, args.rank, args.world, args.batch_size, args.workers, args.steady_batches)
        print(json.dumps(row))
        return row
    if (not args.cells or min(args.cells) < 100 or args.mean_genes < 2
            or not set(args.ranks) <= {1, 2} or not args.ranks or not 1 <= args.cell_types <= len(CELL_TYPES)):
        parser.error(f"--cells >= 100 each, --mean-genes >= 2, --ranks among 1,2, "
                     f"--cell-types in [1, {len(CELL_TYPES)}]")
    return run(args)


def run(args: argparse.Namespace) -> dict:
    """Write each size's corpus, measure its ranks, fit and print."""
    from benchmarks.corpus_verify_benchmark import cache_in, write_synthetic_corpus
    from lightning_langcell.data.corpus import CellCorpus

    mean = args.mean_genes
    settings = {"cells": args.cells, "genes_per_cell": [mean // 2, mean * 3 // 2], "cell_types": args.cell_types,
                "ranks": args.ranks, "workers": args.workers, "batch_size": args.batch_size,
                "steady_batches": args.steady_batches, "seed": args.seed, "split": [0.9, 0.1, 0.0],
                "verify_digests": False, "mgm_probability": 0.15}
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_path_benchmark_") as tmp, cache_in(Path(tmp) / "cache"):
        for cells in args.cells:
            path = Path(tmp) / f"corpus_{cells}"
            started = time.perf_counter()
            write_synthetic_corpus(path, cells, mean, args.seed,
                                   categories={"cell_type": CELL_TYPES[: args.cell_types]})
            write_s = time.perf_counter() - started
            corpus = CellCorpus(path)  # ids range-checked once here, remembered for the ranks
            tokens = int(corpus.manifest["n_tokens"])
            started = time.perf_counter()
            problems = corpus.digest_problems()
            digest_s = time.perf_counter() - started
            if problems:
                raise RuntimeError("; ".join(problems))
            lengths = corpus.lengths
            print(f"{cells:,} cells, {tokens:,} tokens ({lengths.min()}-{lengths.max()} genes/cell): "
                  f"written in {write_s:.1f} s, digest pass {digest_s:.2f} s", flush=True)
            del corpus, lengths
            for world in args.ranks:
                rank_rows = run_ranks(path, world, args, args.workers if world == 1 else [0])
                row = combine_ranks(cells, tokens, world, rank_rows)
                row.update(write_s=write_s, digest_s=digest_s)
                rows.append(row)
            _remove_tree(path)
    workers_shown = {w for row in rows for w in args.workers if f"first_batch_s_w{w}" in row}
    fits = extrapolate(rows)
    print_tables([r for r in rows if r["ranks"] == 1], [f for f in fits if f["ranks"] == 1], sorted(workers_shown))
    if 2 in args.ranks:
        print_tables([r for r in rows if r["ranks"] == 2], [f for f in fits if f["ranks"] == 2], [0])
    return {"settings": settings, "rows": rows, "fits": fits}


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
