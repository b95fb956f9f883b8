"""Run the benchmark suites, write ``benchmarks/results/<suite>.json`` and regenerate the leaderboard.

    python -m benchmarks.run --suite quality|speed|data|all [--quick] [--datasets pbmc3k ...]
    python -m benchmarks.run --render-only      # LEADERBOARD.md + plots from the saved JSON alone

- ``quality`` (:mod:`benchmarks.quality`): real cells, zero-shot / linear probe / few-shot /
  supervised baselines, LangCell few-shot and fine-tuning, a reverse pre-training, few-shot
  adapters, open-set AUROC and ontology-hierarchy scores (:mod:`benchmarks.annotation_quality`)
  (``--quick``: one subsampled dataset). ``results["timings"]`` has each part's time. A full
  run also regenerates the shipped checkpoint's model card (``--card-dir``) from its results.
- ``speed``: the speed benchmarks' ``main()`` — tokenizer on the 20,000 × 20,000
  file of its issue (best of 3) and its cells/s over 2,500-10,000 cells; pre-training step (ours,
  packed, packed by a token budget, HF SDPA length-grouped) on real bundled cells at the tiny size (8
  cells) and the official size (6 cells), batches of 2, the cases' steps interleaved, the padding
  plan of every bundled real cell, and the step time at sequence lengths 128 and 1,024; zero-shot 2 cells on 1
  thread at the official model sizes (fp32 and bf16 autocast), over 1-4 cells and 2-8 classes, and
  every top-k on 300 never-seen PBMCs (pbmc3k) with the shipped trained checkpoint (``--quick``: the zero-shot
  benchmark's tiny model); the corpus integrity checks on a synthetic 200,000-cell corpus, in
  reads of the corpus (``--quick``: 5,000 cells); zero-shot at ontology scale
  (:mod:`benchmarks.ontology_scaling_benchmark`): 1 cell at the official sizes (2,048 tokens, 1
  thread, random weights), ours top-5 at 10, 100, 1,000 and all 3,221 Cell Ontology classes against
  the official per-class algorithm timed at 1 and 10 classes and fitted linearly beyond. Each
  benchmark's ``scaling`` lists go to the JSON, tables and ``plots/speed_scaling.png``.
- ``data`` (``benchmarks/results/data_path.json``): the data path at corpus scale
  (:mod:`benchmarks.data_path_benchmark`: synthetic corpora of 1M, 3M and 10M cells, 1 and 2 ranks,
  fitted and extrapolated to 27.5M cells) and the loader against the official-size model
  (:mod:`benchmarks.loader_vs_model`, 20,000 cells, one timed model step of 2 cells per thread count)
  (``--quick``: 20,000 and 50,000 cells, tiny model). Its wall time is the results file's
  ``wall_s`` (about 4 min beside the quality suite on the 2-core machine).
Each results file records the commit, machine (platform, CPUs, torch), seeds, splits, config and
the suite's measured wall time (``wall_s``), which the leaderboard and README quote.
Needs scikit-learn and matplotlib (``pip install -e .[benchmarks]``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

from benchmarks.leaderboard import plot, render
from benchmarks.shipped_checkpoint import CHECKPOINT, card_ready, write_card

HERE = Path(__file__).resolve().parent
DATA_RESULTS = "data_path.json"
SPEED_ARGS = {
    "tokenizer_benchmark": ["--cells", "20000", "--genes", "20000", "--detected", "2000", "--repeat", "3",
                            "--scaling", "2500,5000,10000"],
    "pretrain_step_benchmark": ["--sizes", "tiny,official", "--context-sizes", "tiny", "--cells", "8",
                                "--official-cells", "6", "--batch-size", "2", "--threads", "1",
                                "--lengths", "128,1024", "--scaling-steps", "1"],
    "zero_shot_benchmark": ["--cells", "2", "--threads", "1", "--scaling", "1,2,4", "--class-scaling", "2,4,8",
                            "--bf16", "--real-data", "data/cells/pbmc3k.h5ad", "--real-cells", "300",
                            "--real-model", "checkpoints/langcell-tiny-bundled"],
    "corpus_verify_benchmark": ["--cells", "200000", "--mean-length", "1000", "--repeat", "3"],
    "ontology_scaling_benchmark": ["--ontology-scaling", "10,100,1000,all", "--genes", "2047", "--threads", "1",
                                   "--ontology-cells", "1", "--ontology-k", "5", "--official-max-classes", "10",
                                   "--text-sample", "64"],
}
DATA_ARGS = {
    "data_path_benchmark": ["--cells", "1000000,3000000,10000000", "--ranks", "1,2"],
    "loader_vs_model": ["--size", "official", "--cells", "20000", "--model-steps", "1"],
}
QUICK_DATA_ARGS = {
    "data_path_benchmark": ["--cells", "20000,50000", "--ranks", "1,2", "--steady-batches", "20"],
    "loader_vs_model": ["--size", "tiny", "--cells", "2000", "--steady-batches", "5"],
}
SCALING_KEYS = ("scaling", "class_scaling", "real_cells", "padding_plan")  # lists a benchmark's main() may return beside its rows
NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
QUICK_SPEED_EXTRA = {"zero_shot_benchmark": ["--quick", "--real-cells", "40"],  # tiny model, 40 real cells
                     "corpus_verify_benchmark": ["--cells", "5000"], "ontology_scaling_benchmark": ["--quick"]}


def git_commit() -> str:
    """``git rev-parse HEAD`` (+ ``-dirty`` when the tree has uncommitted changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def stamp(results: dict) -> dict:
    """Add commit, machine and time to a results dict."""
    return {**results, "commit": git_commit(), "machine": machine(),
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def run_speed(quick: bool = False, log=print) -> dict:
    """Call each speed benchmark's ``main(argv)``; rows are what it returns (stdout kept if it returns none)."""
    import importlib

    results = {"suite": "speed", "quick": quick, "config": {"argv": SPEED_ARGS, "quick_extra": QUICK_SPEED_EXTRA},
               "seeds": {"all": 0}, "splits": "synthetic cells (see each benchmark)", "benchmarks": {}}
    for name, argv in SPEED_ARGS.items():
        argv = argv + (QUICK_SPEED_EXTRA.get(name, []) if quick else [])
        started, printed = time.perf_counter(), io.StringIO()
        entry = {"argv": " ".join(["python -m benchmarks." + name, *[a or "''" for a in argv]])}
        try:
            with contextlib.redirect_stdout(printed):
                returned = importlib.import_module(f"benchmarks.{name}").main(argv)
            returned = returned if isinstance(returned, dict) else {"rows": list(returned or [])}
            rows = returned.get("cases") or returned.get("rows") or []
            scaling = {key: returned[key] for key in SCALING_KEYS if returned.get(key)}
            entry.update(rows=_jsonable(rows), scaling=_jsonable(scaling), printed=printed.getvalue()[-4000:])
            if returned.get("ontology_scaling"):
                entry["ontology_scaling"] = _jsonable({k: v for k, v in returned["ontology_scaling"].items()
                                                       if k != "rows"})
        except Exception as error:  # noqa: BLE001 - one failing benchmark must not lose the others
            entry.update(rows=[], error=f"{type(error).__name__}: {error}", printed=printed.getvalue()[-4000:])
        entry["seconds"] = round(time.perf_counter() - started, 1)
        results["benchmarks"][name] = entry
        failed = f" ({entry['error']})" if "error" in entry else ""
        log(f"{name}: {entry['seconds']} s, {len(entry['rows'])} rows{failed}")
    return results


def run_data(quick: bool = False, log=print) -> dict:
    """The data-path benchmarks' ``main()``: their returned dicts under their names (an error kept instead)."""
    import importlib

    chosen = QUICK_DATA_ARGS if quick else DATA_ARGS
    results = {"suite": "data", "quick": quick, "config": {"argv": chosen}, "seeds": {"all": 0},
               "splits": "synthetic corpora, 0.9/0.1 train/val (see each benchmark)"}
    for name, argv in chosen.items():
        started, printed = time.perf_counter(), io.StringIO()
        entry = {"argv": " ".join(["python -m benchmarks." + name, *argv])}
        try:
            with contextlib.redirect_stdout(printed):
                entry.update(_jsonable(importlib.import_module(f"benchmarks.{name}").main(argv)))
        except Exception as error:  # noqa: BLE001 - one failing benchmark must not lose the other
            entry["error"] = f"{type(error).__name__}: {error}"
        entry.update(printed=printed.getvalue()[-4000:], seconds=round(time.perf_counter() - started, 1))
        results[name] = entry
        log(f"{name}: {entry['seconds']} s" + (f" ({entry['error']})" if "error" in entry else ""))
    return results


def write_json(results: dict, path: Path) -> None:
    """Indented JSON with each list of numbers (predictions, positions) on one line."""
    from lightning_langcell.io_utils import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(results), indent=1)
    text = NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    with atomic_file(path, "w") as handle:
        handle.write(text + "\n")


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def regenerate(results_dir: Path, leaderboard: Path, plots_dir: Path, card_dir: Path | None = None) -> str:
    """LEADERBOARD.md and plots (and, with ``card_dir``, the shipped checkpoint's model card when the
    quality results are a full run) from ``results_dir/{quality,speed,data_path}.json`` alone; returns the text."""
    from lightning_langcell.io_utils import atomic_file

    quality, speed = load_json(results_dir / "quality.json"), load_json(results_dir / "speed.json")
    text = render(quality, speed, load_json(results_dir / DATA_RESULTS))
    with atomic_file(leaderboard, "w") as handle:
        handle.write(text)
    plot(quality, speed, plots_dir)
    if card_dir is not None and quality and card_ready(quality):
        write_card(quality, card_dir)
    return text


def timed(run, *args) -> dict:
    """``stamp(run(*args))`` with the suite's measured wall time in seconds as ``wall_s``."""
    started = time.perf_counter()
    results = run(*args)
    return {**stamp(results), "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("quality", "speed", "data", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="subsampled data, fewer α/k/seeds (a smoke run)")
    parser.add_argument("--datasets", nargs="+", help="quality datasets (default: all bundled + ACTINN if present)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--leaderboard", type=Path, default=HERE / "LEADERBOARD.md")
    parser.add_argument("--plots-dir", type=Path, default=HERE / "plots")
    parser.add_argument("--card-dir", type=Path, default=CHECKPOINT,
                        help="where a full quality run writes the shipped checkpoint's README.md + metrics.json")
    parser.add_argument("--render-only", action="store_true", help="only regenerate LEADERBOARD.md and plots")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    written = {}
    if not args.render_only:
        if args.suite in ("quality", "all"):
            from benchmarks.quality import run_quality

            written["quality"] = timed(run_quality, args.quick, args.datasets)
            write_json(written["quality"], args.results_dir / "quality.json")
        if args.suite in ("speed", "all"):
            written["speed"] = timed(run_speed, args.quick)
            write_json(written["speed"], args.results_dir / "speed.json")
        if args.suite in ("data", "all"):
            written["data"] = timed(run_data, args.quick)
            write_json(written["data"], args.results_dir / DATA_RESULTS)
    text = regenerate(args.results_dir, args.leaderboard, args.plots_dir, args.card_dir)
    print(text)
    return written


if __name__ == "__main__":
    main()
