"""Quality suite: zero-shot LangCell, linear probe, few-shot and supervised baselines on real cells.

Every row is scored on one fixed test split per dataset (accuracy, balanced accuracy, macro-F1,
weighted-F1, :func:`benchmarks.baselines.label_metrics`):

- "labels seen in pre-training (held-out cells)": the datasets the shipped checkpoint
  ``langcell-tiny-bundled`` was pre-trained on (read from its recipe,
  :func:`benchmarks.shipped_checkpoint.training_datasets`): test = the recipe's held-out test
  split (80/10/10 stratified, seed 0, :func:`benchmarks.shipped_checkpoint.recipe_test_cells`);
  train = every other cell (the recipe's train + val). No pre-training cell is ever a test cell,
  but the pre-training texts came from these labels: zero-shot here is a supervised text head.
- "never seen (cells and labels)": pbmc3k, garnett_pbmc_facs; ACTINN mouse blood when present
  (GPL-3, read in place under ``$LANGCELL_SHARED_DATA``, default ``../shared/data`` beside the
  repository, never copied): ``stratified_split(labels, (0.8, 0, 0.2), seed 0)``.

Rows: zero-shot for each α (all labels of the dataset as classes, max 256 tokens as trained);
supervised references trained on the train split (majority class, logistic regression on
log1p CP10k, kNN on PCA-50); a linear probe (logistic regression) on the frozen checkpoint's
cell embeddings ``obsm["X_langcell"]``; few-shot logistic regression with k cells per class
(``k_shot_indices`` on the train split, classes with < k training cells dropped, their test
cells counted as errors), mean ± sd over seeds; LangCell few-shot fine-tuning on the same k cells
(:mod:`benchmarks.few_shot_langcell`, paired per seed); LangCell-CE fine-tuning on the train split
(:mod:`benchmarks.fine_tune_langcell`); zero-shot of a tiny model pre-trained on the train splits
of pbmc3k + garnett_pbmc_facs (:mod:`benchmarks.reverse_pretraining`). Where the recipes' epochs do
not fit the CPU budget the suite's ``config`` sets fewer, and records them (``REDUCED``).

Annotation rows (:mod:`benchmarks.annotation_quality`, from the zero-shot run at α = 0.1):
few-shot adapters against zero-shot and logistic regression (same ks and seeds) and the
leave-one-type-out AUROC of the unknown score (at most ``open_set_max_cells`` test cells) and
zero-shot at ontology scale (exact vs top-k at 10, 100, 1,000 and all Cell Ontology classes, at most
``class_scaling_max_cells`` test cells, :mod:`benchmarks.class_scaling_quality`) on each
never-seen dataset; exact accuracy, hierarchical F1 and correct-or-ancestor of every dataset's
zero-shot predictions; back-off thresholds chosen on the pre-training datasets' held-out cells
(full runs with pre-training datasets only). Kept under ``few_shot_adapters``, ``open_set``,
``hierarchy``, ``hierarchy_thresholds`` and ``class_scaling``.

Prompt ensembles (:mod:`benchmarks.prompt_ensembles`, α = 0.1): macro-F1 and balanced accuracy of
the official class text, each prompt template alone and the full ensemble on every dataset's test
split; the default is chosen on the pre-training datasets' rows. Kept under ``prompt_ensembles``.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.baselines import BASELINES, label_metrics, log1p_cp10k, logistic_regression
from benchmarks.embedding_quality import dataset_embedding_rows, pbmc_batch_rows
from benchmarks.shipped_checkpoint import (CHECKPOINT, NEVER_SEEN, REPO, SEEN, TRAINING_RECIPE, recipe_test_cells,
                                           training_datasets)

PRETRAINING = training_datasets()
UNSEEN = ("pbmc3k", "garnett_pbmc_facs")
ACTINN = "actinn_mouse_blood/actinn_train_set.h5ad"  # under $LANGCELL_SHARED_DATA (GPL-3: never bundled)
LABEL = "cell_type"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
FULL = {"alphas": [0.0, 0.1, 0.5, 1.0], "ks": [1, 3, 5, 10], "seeds": [0, 1, 2, 3, 4], "max_cells": None,
        "langcell_few_shot": {"epochs": 3}, "fine_tune": {"epochs": 5, "learning_rates": [5e-5, 1e-3]},
        "reverse_pretrain": {"max_epochs": 1, "max_steps": None}, "open_set_max_cells": 300,
        "hierarchy_thresholds": True, "class_scaling_max_cells": 40}
QUICK = {"alphas": [0.1, 1.0], "ks": [1, 5], "seeds": [0, 1], "max_cells": 300, "langcell_few_shot": {"epochs": 1},
         "fine_tune": {"epochs": 1, "learning_rates": [1e-3]}, "reverse_pretrain": {"max_epochs": 1, "max_steps": 2},
         "open_set_max_cells": 60, "hierarchy_thresholds": False, "class_scaling_max_cells": 10}
REDUCED = {  # what the suite changes from the recipes to fit ~25 min on 2 CPU cores (1 torch thread)
    "langcell_few_shot": "recipes/few_shot.yaml trains 10 epochs; the suite trains config.langcell_few_shot.epochs "
                         "(everything else as the recipe; full test split, no test-cell subsampling)",
    "fine_tune": "recipes/finetune.yaml trains 20 epochs with 500 warm-up steps at lr 5e-5; the suite trains "
                 "config.fine_tune.epochs with round(500 * epochs / 20) warm-up steps, at the recipe's lr and at "
                 "lr 1e-3 (at 5e-5 the head does not leave the majority class on the tiny checkpoint, even in the "
                 "recipe's full 20 epochs: pbmc68k_reduced macro-F1 0.052 = majority)",
    "reverse_pretrain": "recipes/pretrain.yaml (2 epochs); the suite trains config.reverse_pretrain epochs / steps "
                        "on the train splits only, with no validation split"}
ANNOTATION_ALPHA = 0.1  # the annotation rows score annotate's default blend
ROLE_TEXT = {"pretraining": SEEN, "unseen": NEVER_SEEN}


@dataclass
class Dataset:
    """One benchmark dataset: AnnData, labels [N] (str), train/test positions (sorted int64)."""

    name: str
    path: Path
    role: str
    adata: object
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    split_how: str
    classes: list[str] = field(default_factory=list)


def shared_data_dir() -> Path:
    """Folder of the shared (not bundled) data: ``$LANGCELL_SHARED_DATA``, default ``../shared/data``."""
    return Path(os.environ.get("LANGCELL_SHARED_DATA", REPO.parent / "shared" / "data"))


def shown_path(path: Path) -> str:
    """``path`` as results record it: relative to the repository or the shared data folder, never absolute."""
    path = Path(path).resolve()
    for root, prefix in ((REPO, ""), (shared_data_dir().resolve(), "$LANGCELL_SHARED_DATA/")):
        if path.is_relative_to(root):
            return prefix + str(path.relative_to(root))
    return path.name


def _capped(labels: np.ndarray, max_cells: int | None, seed: int = 1) -> np.ndarray:
    """All positions, or a stratified seeded subsample of ``max_cells`` (quick mode).

    Seed 1, not 0: the same seed would reuse the recipe split's per-class shuffles and keep
    only recipe training cells.
    """
    from lightning_langcell.data.splits import stratified_split

    if max_cells is None or len(labels) <= max_cells:
        return np.arange(len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        keep = stratified_split(labels, (max_cells / len(labels), 0.0, 1 - max_cells / len(labels)), seed)
    return keep["train"]


def dataset_paths(names: list[str] | None) -> list[tuple[str, Path, str]]:
    """(name, path, role) of the requested datasets (default: all six bundled + ACTINN when present)."""
    found = [(n, REPO / "data/cells" / f"{n}.h5ad", "pretraining") for n in PRETRAINING]
    found += [(n, REPO / "data/cells" / f"{n}.h5ad", "unseen") for n in UNSEEN]
    if (shared_data_dir() / ACTINN).is_file():
        found.append(("actinn_mouse_blood", shared_data_dir() / ACTINN, "unseen"))
    if names:
        unknown = sorted(set(names) - {n for n, _, _ in found})
        if unknown:
            raise SystemExit(f"unknown or missing dataset(s) {unknown}; available: {[n for n, _, _ in found]}")
        found = [item for item in found if item[0] in names]
    return found


def load_dataset(name: str, path: Path, role: str, max_cells: int | None,
                 recipe_tests: dict[str, np.ndarray] | None) -> Dataset:
    """Read one dataset and fix its train/test split (see the module docstring)."""
    import anndata

    from lightning_langcell.data.splits import stratified_split

    adata = anndata.read_h5ad(path)
    labels = adata.obs[LABEL].astype(str).to_numpy()
    if role == "pretraining":
        test_mask = np.zeros(adata.n_obs, dtype=bool)
        test_mask[recipe_tests[name]] = True
        keep = _capped(labels, max_cells)
        adata, labels, test_mask = adata[keep].copy(), labels[keep], test_mask[keep]
        train, test = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
        how = (f"test = the pre-training recipe's held-out test split ({TRAINING_RECIPE.relative_to(REPO)}, "
               "80/10/10 stratified by cell_type, seed 0); train = the other cells (recipe train + val)")
    else:
        keep = _capped(labels, max_cells)
        adata, labels = adata[keep].copy(), labels[keep]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            split = stratified_split(labels, (0.8, 0.0, 0.2), seed=0)
        train, test = split["train"], split["test"]
        how = "stratified_split(cell_type, (0.8, 0, 0.2), seed=0)"
    if max_cells is not None:
        how += f"; quick mode: stratified subsample of {adata.n_obs} cells first"
    return Dataset(name, path, role, adata, labels, train, test, how, sorted(set(labels)))


def score_row(data: Dataset, setting: str, method: str, predicted: np.ndarray, n_train: int, **extra) -> dict:
    truth = data.labels[data.test]
    index = {c: i for i, c in enumerate(data.classes)}
    return {"dataset": data.name, "setting": setting, "method": method, "n_train": int(n_train),
            "n_test": int(len(data.test)), **extra, **label_metrics(truth, predicted, data.classes),
            "predictions": [index.get(str(p), -1) for p in predicted]}


def zero_shot_predictions(data: Dataset, model, alphas: list[float], test_only: bool = True):
    """Per α: (α, predicted labels [n_test], seconds, annotated AnnData of the test or all cells)."""
    from lightning_langcell.inference.annotate import annotate

    cells = data.adata[data.test].copy() if test_only else data.adata
    for alpha in alphas:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            annotated = annotate(cells, model, label_column=LABEL, alpha=alpha, batch_size=32, max_length=256)
        predicted = annotated.obs["langcell_prediction"].astype(object).to_numpy()
        seconds = round(time.perf_counter() - started, 2)
        yield alpha, predicted if test_only else predicted[data.test], seconds, annotated


def zero_shot_rows(data: Dataset, alphas: list[float]) -> tuple[list[dict], np.ndarray, object]:
    """Zero-shot rows for each α, the frozen cell embeddings [N, 256] (``X_langcell``) and the
    annotated AnnData of every cell at α = :data:`ANNOTATION_ALPHA` (None when not among ``alphas``)."""
    rows, annotated, headline = [], None, None
    for alpha, predicted, seconds, annotated in zero_shot_predictions(data, str(CHECKPOINT), alphas or [1.0],
                                                                      test_only=False):
        if alpha in alphas:
            rows.append(score_row(data, "zero-shot", "LangCell zero-shot (langcell-tiny-bundled)", predicted, 0,
                                  alpha=alpha, seconds=seconds))
        if alpha == ANNOTATION_ALPHA:
            headline = annotated
    return rows, np.asarray(annotated.obsm["X_langcell"], dtype=np.float32), headline


def annotation_rows(results: dict, data: Dataset, annotated, model, text_tokenizer, config: dict,
                    log=print) -> float:
    """Add the hierarchy row of every dataset and, on never-seen ones, the few-shot adapter and
    open-set rows (:mod:`benchmarks.annotation_quality`) to ``results``; returns the seconds taken."""
    from benchmarks.annotation_quality import adapter_rows, class_scaling_rows, hierarchy_row, open_set_row

    started = time.perf_counter()
    if annotated is None:
        return 0.0
    predicted = annotated.obs["langcell_prediction"].astype(object).to_numpy()[data.test]
    results["hierarchy"]["rows"].append(hierarchy_row(data, predicted, f"zero-shot α={ANNOTATION_ALPHA}"))
    if data.role == "unseen":
        results["few_shot_adapters"]["rows"] += adapter_rows(data, annotated, model, text_tokenizer, config["ks"],
                                                             config["seeds"])
        results["open_set"]["rows"].append(open_set_row(data, config["open_set_max_cells"], log))
        results["class_scaling"]["rows"] += class_scaling_rows(data, config["class_scaling_max_cells"], log)
    return round(time.perf_counter() - started, 1)


def supervised_rows(data: Dataset, expression: np.ndarray, embeddings: np.ndarray) -> list[dict]:
    """Supervised references on the train split, and the linear probe on frozen embeddings."""
    import torch

    from lightning_langcell.inference.adapters import standardisation

    y_train = data.labels[data.train]
    rows = [score_row(data, "supervised reference", name, fit(expression[data.train], y_train, expression[data.test]),
                 len(data.train)) for name, fit in BASELINES.items()]
    mean, sd = (values.numpy() for values in standardisation(torch.from_numpy(embeddings[data.train])))  # on train
    probe = logistic_regression((embeddings[data.train] - mean) / sd, y_train, (embeddings[data.test] - mean) / sd)
    rows.append(score_row(data, "linear probe", "logistic regression on frozen X_langcell (standardised)", probe,
                     len(data.train)))
    return rows


def few_shot_cells(data: Dataset, k: int, seed: int) -> np.ndarray:
    """Dataset positions [n] of k training cells per class from the train split (classes with < k dropped)."""
    from lightning_langcell.data.splits import k_shot_indices

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        picked, _ = k_shot_indices(data.labels[data.train], k, seed=seed, min_cells=k)
    return data.train[picked]


def seed_summary(runs: list[dict], metrics: tuple[str, ...] = METRICS) -> dict:
    """Mean and sample sd (``<metric>_sd``) of each metric over the per-seed runs."""
    summary = {}
    for metric in metrics:
        values = np.array([run[metric] for run in runs])
        summary[metric] = round(float(values.mean()), 4)
        summary[f"{metric}_sd"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
    return summary


def few_shot_rows(data: Dataset, expression: np.ndarray, ks: list[int], seeds: list[int]) -> list[dict]:
    """Few-shot logistic regression: mean ± sd over seeds for each k (per seed: cells and predictions)."""
    rows = []
    index = {c: i for i, c in enumerate(data.classes)}
    for k in ks:
        runs = []
        for seed in seeds:
            train = few_shot_cells(data, k, seed)
            predicted = logistic_regression(expression[train], data.labels[train], expression[data.test], seed=seed)
            runs.append({"seed": seed, "n_train": int(len(train)), "n_classes": int(len(set(data.labels[train]))),
                         **label_metrics(data.labels[data.test], predicted, data.classes),
                         "train_positions": train.tolist(), "predictions": [index[str(p)] for p in predicted]})
        rows.append({"dataset": data.name, "setting": "few-shot", "method": "logistic regression (log1p CP10k)",
                     "k": k, "seeds": list(seeds), "n_train": runs[0]["n_train"], "n_test": int(len(data.test)),
                     **seed_summary(runs), "per_seed": runs})
    return rows


def langcell_training_rows(data: Dataset, expression_rows: list[dict], config: dict, scratch: Path,
                           log=print) -> tuple[list[dict], dict]:
    """Few-shot LangCell rows (paired with the few-shot LR ``expression_rows``) and the fine-tune row."""
    from benchmarks.few_shot_langcell import langcell_few_shot_rows
    from benchmarks.fine_tune_langcell import fine_tune_row
    from benchmarks.lightning_runs import tokenize_once

    timings, rows = {}, []
    corpus = tokenize_once(data.adata, scratch, data.name, LABEL)
    if config.get("langcell_few_shot"):
        started = time.perf_counter()
        rows += langcell_few_shot_rows(data, corpus, expression_rows, config["langcell_few_shot"]["epochs"],
                                       scratch, log)
        timings["few_shot_langcell_s"] = round(time.perf_counter() - started, 1)
    if config.get("fine_tune"):
        started = time.perf_counter()
        rows += [fine_tune_row(data, corpus, config["fine_tune"]["epochs"], scratch, learning_rate=rate, log=log)
                 for rate in config["fine_tune"]["learning_rates"]]
        timings["fine_tune_s"] = round(time.perf_counter() - started, 1)
    return rows, timings


def prompt_rows(rows: list[dict], data: Dataset, model, text_tokenizer) -> float:
    """Add ``data``'s prompt-ensemble rows (:mod:`benchmarks.prompt_ensembles`) to ``rows``; returns the seconds."""
    from benchmarks.prompt_ensembles import dataset_rows

    started = time.perf_counter()
    rows += dataset_rows(data, model, text_tokenizer)
    return round(time.perf_counter() - started, 1)


def hierarchy_threshold_results(config: dict, recipe_tests: dict | None, wanted: list, timings: dict) -> dict:
    """Back-off thresholds chosen on the pre-training datasets' held-out cells, or why not run."""
    from benchmarks.annotation_quality import threshold_rows

    names = [name for name, _, role in wanted if role == "pretraining"]
    if not config["hierarchy_thresholds"] or not names:
        return {"skipped": "quick mode or no pre-training dataset in this run: see "
                           "`python -m benchmarks.hierarchy_thresholds`", "rows": []}
    started = time.perf_counter()
    chosen = threshold_rows(recipe_tests, names)
    timings["hierarchy_thresholds_s"] = round(time.perf_counter() - started, 1)
    return chosen


def run_quality(quick: bool = False, datasets: list[str] | None = None, log=print) -> dict:
    """Run the whole quality suite; returns the results dict (see ``benchmarks/run.py``)."""
    import torch

    suite_started = time.perf_counter()
    torch.set_num_threads(1)
    config = dict(QUICK if quick else FULL)
    wanted = dataset_paths(datasets)
    results = {"suite": "quality", "quick": quick, "config": {
        **config, "max_length": 256, "batch_size": 32, "label_column": LABEL, "torch_threads": 1,
        "logistic_regression": "sklearn LogisticRegression(C=1, lbfgs, max_iter=300) on log1p(CP10k)",
        "knn": "PCA(50, randomized, fitted on train) + KNeighborsClassifier(10, distance-weighted)",
        "zero_shot_classes": "every cell_type label of the dataset (texts from its CL ids)",
        "reduced": REDUCED},
        "seeds": {"split": 0, "few_shot": config["seeds"], "fine_tune": 0, "reverse_pretrain": 0,
                  "models": "sklearn random_state = few-shot seed (0 otherwise); LangCell runs seed_everything(seed)"},
        "checkpoint": {"name": CHECKPOINT.name, "path": str(CHECKPOINT.relative_to(REPO)),
                       "recipe": str(TRAINING_RECIPE.relative_to(REPO)), "training_datasets": list(PRETRAINING),
                       "pretrained_on": f"80% train split ({TRAINING_RECIPE.relative_to(REPO)}, seed 0) of "
                                        + ", ".join(f"data/cells/{n}.h5ad" for n in PRETRAINING)
                                        + "; pbmc3k, garnett_pbmc_facs and ACTINN never seen"},
        "datasets": {}, "rows": [], "timings": {},
        "few_shot_adapters": {"ks": config["ks"], "seeds": config["seeds"], "alpha": ANNOTATION_ALPHA, "rows": []},
        "open_set": {"max_cells": config["open_set_max_cells"], "rows": []},
        "hierarchy": {"alpha": ANNOTATION_ALPHA, "rows": []},
        "class_scaling": {"max_cells": config["class_scaling_max_cells"], "alpha": ANNOTATION_ALPHA, "rows": []}}
    from benchmarks.prompt_ensembles import results as prompt_ensemble_results
    from lightning_langcell.inference.annotate import load_zero_shot_model

    loaded, embedded, prompts = [], {}, []
    model, text_tokenizer, _ = load_zero_shot_model(str(CHECKPOINT))
    with tempfile.TemporaryDirectory(prefix="quality_benchmark_") as scratch:
        recipe_tests = recipe_test_cells(scratch) if any(role == "pretraining" for _, _, role in wanted) else None
        for name, path, role in wanted:
            started = time.perf_counter()
            data = load_dataset(name, path, role, config["max_cells"], recipe_tests)
            expression = log1p_cp10k(data.adata.X)
            results["datasets"][name] = {
                "path": shown_path(path), "role": ROLE_TEXT[role], "n_cells": int(data.adata.n_obs),
                "n_genes": int(data.adata.n_vars), "classes": data.classes,
                "split": {"how": data.split_how, "n_train": int(len(data.train)), "n_test": int(len(data.test)),
                          "test_positions": data.test.tolist()},
                "test_truth": [data.classes.index(label) for label in data.labels[data.test]]}
            zero_shot, embeddings, annotated = zero_shot_rows(data, config["alphas"])
            few_shot = few_shot_rows(data, expression, config["ks"], config["seeds"])
            rows = zero_shot + supervised_rows(data, expression, embeddings) + few_shot
            rows += dataset_embedding_rows(data, embeddings, expression, model, text_tokenizer, LABEL,
                                           CHECKPOINT.name)
            embedded[name] = embeddings
            timings = {"baselines_s": round(time.perf_counter() - started, 1)}
            log(f"{name}: {data.adata.n_obs} cells, train {len(data.train)} / test {len(data.test)}, "
                f"{len(rows)} baseline rows in {timings['baselines_s']} s")
            timings["annotation_s"] = annotation_rows(results, data, annotated, model, text_tokenizer, config, log)
            timings["prompt_ensembles_s"] = prompt_rows(prompts, data, model, text_tokenizer)
            del annotated
            trained, more = langcell_training_rows(data, few_shot, config, Path(scratch), log)
            results["rows"] += rows + trained
            results["timings"][name] = {**timings, **more}
            loaded.append(data)
        results["hierarchy_thresholds"] = hierarchy_threshold_results(config, recipe_tests, wanted, results["timings"])
    results["prompt_ensembles"] = prompt_ensemble_results(prompts)  # the default chosen on the pre-training rows
    results["rows"] += pbmc_batch_rows({data.name: data for data in loaded}, embedded, CHECKPOINT.name)
    results["splits"] = {name: {k: v for k, v in info["split"].items() if k != "test_positions"}
                         for name, info in results["datasets"].items()}
    if config.get("reverse_pretrain"):
        from benchmarks.reverse_pretraining import reverse_rows

        started = time.perf_counter()
        reverse = config["reverse_pretrain"]
        rows, results["reverse_pretraining"] = reverse_rows(loaded, config["alphas"], reverse["max_epochs"],
                                                            reverse["max_steps"], log=log)
        results["rows"] += rows
        results["timings"]["reverse_pretraining_s"] = round(time.perf_counter() - started, 1)
    results["timings"]["total_s"] = round(time.perf_counter() - suite_started, 1)
    log(f"quality suite: {results['timings']['total_s']} s")
    return results
