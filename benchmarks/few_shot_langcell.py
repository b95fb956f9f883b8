"""LangCell few-shot fine-tuning (``recipes/few_shot.yaml``) of the shipped checkpoint, one dataset.

Expensive on a CPU (a fit + test of about 20 s per (k, seed) for 800 cells with the tiny
checkpoint), so the quality suite runs it for one dataset never seen in pre-training
(``garnett_pbmc_facs``) and a few (k, seed) pairs. The recipe picks its own cells: ``k_shot_indices``
(k per class, seeded) for training, the rest split 10% val / 90% test (stratified, same seed).
For a paired comparison the same k cells train a logistic regression on log1p(CP10k) that is
scored on the same test cells (``cell_index`` of the recipe's ``test_predictions.csv``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from benchmarks.baselines import label_metrics, log1p_cp10k, logistic_regression

REPO = Path(__file__).resolve().parents[1]
DATASET = "garnett_pbmc_facs"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")


def _cli(command: str, path: Path, k: int, seed: int, runs: Path, extra: list[str]) -> None:
    argv = [sys.executable, "-m", "lightning_langcell", command, "--config", str(REPO / "recipes/few_shot.yaml"),
            "--data.data", str(path), "--data.k_shot", str(k), "--data.seed", str(seed), "--seed_everything", str(seed),
            "--data.max_length", "256", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--model.init_args.init_from", str(REPO / "checkpoints/langcell-tiny-bundled"),
            "--trainer.logger.init_args.save_dir", str(runs), "--trainer.logger.init_args.version", f"k{k}s{seed}",
            "--trainer.enable_progress_bar", "false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command} k={k} seed={seed} failed: {done.stderr[-1500:]}")


def _summary(runs: list[dict]) -> dict:
    out = {}
    for metric in METRICS:
        values = np.array([run[metric] for run in runs])
        out[metric] = round(float(values.mean()), 4)
        out[f"{metric}_sd"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
    return out


def run_langcell_few_shot(ks: list[int], seeds: list[int], log=print) -> list[dict]:
    """Rows (LangCell fine-tuned, and the paired logistic regression) for each k, mean ± sd over seeds."""
    import anndata

    from lightning_langcell.data.splits import k_shot_indices

    path = REPO / "data/cells" / f"{DATASET}.h5ad"
    adata = anndata.read_h5ad(path)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(labels))
    expression = log1p_cp10k(adata.X)
    rows = []
    with tempfile.TemporaryDirectory(prefix="few_shot_langcell_") as tmp:
        for k in ks:
            langcell, paired = [], []
            for seed in seeds:
                runs = Path(tmp)
                _cli("fit", path, k, seed, runs, [])
                folder = runs / "few_shot" / f"k{k}s{seed}"
                _cli("test", path, k, seed, runs, ["--ckpt_path", str(folder / "checkpoints/last.ckpt")])
                with open(folder / "test_predictions.csv", newline="") as handle:
                    table = list(csv.DictReader(handle))
                test = np.array([int(r["cell_index"]) for r in table])
                predicted = np.array([r["prediction_name"] for r in table], dtype=object)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    train, _ = k_shot_indices(labels, k, seed=seed)
                if np.intersect1d(train, test).size:
                    raise RuntimeError("the recipe's test cells overlap its k-shot training cells")
                reported = json.loads((folder / "test_results.json").read_text())["metrics"]
                ours = label_metrics(labels[test], predicted, classes)
                if abs(ours["accuracy"] - reported["accuracy"]) > 1e-3:
                    raise RuntimeError(f"recomputed accuracy {ours['accuracy']} != reported {reported['accuracy']}")
                common = {"seed": seed, "n_train": int(len(train)), "n_test": int(len(test))}
                langcell.append({**common, **ours})
                baseline = logistic_regression(expression[train], labels[train], expression[test], seed=seed)
                paired.append({**common, **label_metrics(labels[test], baseline, classes)})
                log(f"LangCell few-shot {DATASET} k={k} seed={seed}: accuracy {ours['accuracy']:.3f} "
                    f"(paired logistic regression {paired[-1]['accuracy']:.3f})")
            for method, runs_ in (("LangCell few-shot fine-tune (recipes/few_shot.yaml)", langcell),
                                  ("logistic regression (log1p CP10k), same cells", paired)):
                rows.append({"dataset": DATASET, "setting": "few-shot LangCell", "method": method, "k": k,
                             "seeds": list(seeds), "n_train": runs_[0]["n_train"], "n_test": runs_[0]["n_test"],
                             **_summary(runs_), "per_seed": runs_})
    return rows
