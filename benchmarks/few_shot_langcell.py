"""LangCell few-shot fine-tuning rows of the quality suite, paired with few-shot logistic regression.

For each dataset, k and seed the k training cells per class are those of the few-shot
logistic-regression row (:func:`benchmarks.quality.few_shot_cells`: ``k_shot_indices`` on the
dataset's train split, classes with < k cells dropped), and both are scored on the dataset's
fixed test split, so the two rows of a (dataset, k, seed) differ only in the method.

The task is the package's :class:`~lightning_langcell.tasks.few_shot.FewShotLangCell` with the
settings of ``recipes/few_shot.yaml`` (Adam lr 1e-5 constant, batch 12, loss
CE(cell·text / 0.05) + CE over the matcher's class probabilities, prediction α = 0.1 blend),
started from the shipped checkpoint, ``<cls>`` + 255 genes, CPU, in-process
(:mod:`benchmarks.lightning_runs`: one tokenization per dataset, nothing written per run).
The number of epochs is the suite's setting (the recipe's 10 do not fit the CPU budget; the
results record it). Classes sharing one CL term get distinct texts
(:func:`benchmarks.lightning_runs.distinct_class_texts`); LangCell scores every class of the
dataset (classes dropped for having < k training cells keep their text), while the logistic
regression can only predict the classes it was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.baselines import label_metrics
from benchmarks.lightning_runs import SubsetDataModule, distinct_class_texts, fit_predict, task_from_checkpoint
from benchmarks.quality import CHECKPOINT, LABEL, Dataset, few_shot_cells, seed_summary

METHOD = "LangCell few-shot fine-tune (recipes/few_shot.yaml)"
RECIPE = {"alpha": 0.1, "temperature": 0.05, "loss_weights": {"ctc": 1.0, "ctm": 1.0}, "learning_rate": 1e-5,
          "weight_decay": 0.0, "warmup_steps": 0, "min_lr_ratio": 1.0}
BATCH_SIZE, MAX_LENGTH = 12, 256


def class_text_overrides(corpus: str) -> dict[str, str]:
    """``type2text`` giving tied classes of the corpus distinct texts (empty when none tie)."""
    from lightning_langcell.data.datamodule import LangCellDataModule

    module = LangCellDataModule(corpus, label_column=LABEL, texts=False)
    module.setup("fit")
    return distinct_class_texts(module)


def fit_few_shot(data: Dataset, corpus: str, train: np.ndarray, seed: int, epochs: int, workdir: Path,
                 type2text: dict[str, str], eval_batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Fine-tune the shipped checkpoint on ``train`` (dataset positions); predicted labels [n_test], steps."""
    from lightning_langcell.tasks.few_shot import FewShotLangCell

    module = SubsetDataModule(corpus, train, data.test, label_column=LABEL, texts=False, max_length=MAX_LENGTH,
                              batch_size=BATCH_SIZE, eval_batch_size=eval_batch_size, seed=seed,
                              type2text=type2text or None)
    task = task_from_checkpoint(FewShotLangCell, CHECKPOINT, **RECIPE)
    predicted, steps = fit_predict(task, module, epochs, workdir, seed)
    if module.classes != data.classes:
        raise RuntimeError(f"class order {module.classes} != {data.classes}")
    return np.asarray(data.classes, dtype=object)[predicted], steps


def langcell_few_shot_rows(data: Dataset, corpus: str, paired_rows: list[dict], epochs: int, workdir: Path,
                           log=print) -> list[dict]:
    """One row per k of ``paired_rows`` (the dataset's few-shot logistic-regression rows), same seeds and cells.

    Each row holds mean ± sd over seeds, per-seed metrics, training positions and test
    predictions (class indices over ``data.classes``), and the paired difference in macro-F1
    (LangCell − logistic regression, per seed).
    """
    type2text = class_text_overrides(corpus)
    index = {name: i for i, name in enumerate(data.classes)}
    truth = data.labels[data.test]
    rows = []
    for paired in paired_rows:
        runs = []
        for baseline in paired["per_seed"]:
            k, seed = paired["k"], baseline["seed"]
            train = few_shot_cells(data, k, seed)
            if train.tolist() != baseline["train_positions"]:
                raise RuntimeError(f"{data.name} k={k} seed={seed}: training cells differ from the paired row")
            started = time.perf_counter()
            predicted, steps = fit_few_shot(data, corpus, train, seed, epochs, workdir, type2text)
            metrics = label_metrics(truth, predicted, data.classes)
            runs.append({"seed": seed, "n_train": int(len(train)), "steps": steps,
                         "seconds": round(time.perf_counter() - started, 2), **metrics,
                         "macro_f1_minus_paired": round(metrics["macro_f1"] - baseline["macro_f1"], 4),
                         "train_positions": train.tolist(), "predictions": [index[str(p)] for p in predicted]})
            log(f"  LangCell few-shot {data.name} k={k} seed={seed}: macro-F1 {metrics['macro_f1']:.3f} "
                f"(paired LR {baseline['macro_f1']:.3f}), {steps} steps, {runs[-1]['seconds']:.1f} s")
        rows.append({"dataset": data.name, "setting": "few-shot LangCell", "method": METHOD, "k": paired["k"],
                     "seeds": [run["seed"] for run in runs], "epochs": epochs, "n_train": runs[0]["n_train"],
                     "n_test": int(len(data.test)), **seed_summary(runs),
                     **seed_summary(runs, ("macro_f1_minus_paired",)),
                     "type2text_overrides": type2text, "per_seed": runs})
    return rows

