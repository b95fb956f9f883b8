"""Reverse cross-dataset direction: pre-train on the unseen PBMC sets, zero-shot everything else.

The shipped checkpoint was pre-trained on pbmc68k_reduced + three mouse sets and never saw
pbmc3k or garnett_pbmc_facs. Here a tiny model is pre-trained from scratch on the **train
splits** of pbmc3k and garnett_pbmc_facs only (the suite's fixed splits; their test cells are
never used) with ``recipes/pretrain.yaml`` through the package CLI, in-process (all four
objectives, AdamW 5e-4, warm-up 20 steps, cosine, batch 32, ``<cls>`` + 255 genes, seed 0, CPU),
with every given cell in training (``--data.split [1, 0, 0]``, no validation) and the epochs
set by the suite. It is then used for zero-shot annotation (every label of the dataset as a
class, each α) of the test split of every dataset: those it never saw (pbmc68k_reduced, the
mouse sets, ACTINN) and, for reference, the test splits of its own training sets.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.quality import REPO, UNSEEN, Dataset, score_row, zero_shot_predictions

RECIPE = REPO / "recipes/pretrain.yaml"


def method_name(sources: list[str]) -> str:
    return f"LangCell zero-shot (tiny, pre-trained on {' + '.join(sources)} train splits)"


def pretrain_on_train_splits(sources: list[Dataset], epochs: int, max_steps: int | None, workdir: Path):
    """Pre-train with the recipe on the sources' train splits; (LangCellModel in eval mode, global steps)."""
    from benchmarks.lightning_runs import quiet
    from lightning_langcell.cli import main

    files = []
    for data in sources:
        path = workdir / f"{data.name}_train_split.h5ad"
        data.adata[data.train].copy().write_h5ad(path)
        files.append(str(path))
    argv = ["fit", "--config", str(RECIPE), "--data.data", "[" + ", ".join(files) + "]",
            "--data.split", "[1.0, 0.0, 0.0]", "--data.cache_dir", str(workdir / "corpora"),
            "--trainer.default_root_dir", str(workdir / "run"), "--trainer.max_epochs", str(epochs),
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if max_steps:
        argv += ["--trainer.max_steps", str(max_steps)]
    with quiet():
        cli = main(argv)
    return cli.model.model.eval(), int(cli.trainer.global_step)


def reverse_rows(datasets: list[Dataset], alphas: list[float], epochs: int, max_steps: int | None = None,
                 log=print) -> tuple[list[dict], dict]:
    """Zero-shot rows of the reverse model on every dataset's test split, and the pre-training record."""
    sources = [data for data in datasets if data.name in UNSEEN]
    if not sources:
        return [], {"skipped": f"none of {list(UNSEEN)} among the datasets"}
    names = [data.name for data in sources]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reverse_pretraining_") as scratch:
        model, steps = pretrain_on_train_splits(sources, epochs, max_steps, Path(scratch))
    seconds = round(time.perf_counter() - started, 1)
    log(f"reverse pre-training on {' + '.join(names)} train splits: {steps} steps in {seconds} s")
    info = {"recipe": str(RECIPE.relative_to(REPO)), "max_epochs": epochs, "max_steps": max_steps, "steps": steps,
            "seconds": seconds, "split": "[1, 0, 0]: every given cell trains, no validation", "seed": 0,
            "trained_on": {data.name: {"cells": int(len(data.train)), "positions": data.train.tolist(),
                                       "which": "the dataset's train split (its test split is never used)"}
                           for data in sources}}
    rows, method = [], method_name(names)
    for data in datasets:
        for alpha, predicted, took, _ in zero_shot_predictions(data, model, alphas):
            rows.append(score_row(data, "reverse zero-shot", method, np.asarray(predicted, dtype=object), 0,
                                  alpha=alpha, seen_in_pretraining=data.name in names, seconds=took))
    return rows, info
