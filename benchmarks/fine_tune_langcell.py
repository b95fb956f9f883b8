"""LangCell-CE fine-tuning row of the quality suite: the whole cell encoder + a linear head.

The package's :class:`~lightning_langcell.tasks.cell_classifier.CellTypeClassifier` with the
settings of ``recipes/finetune.yaml`` (AdamW lr 5e-5, weight decay 0.001, batch 16, gradient
clipping 1.0, linear warm-up then cosine decay to 0, head on the pooled cell state: ``<cls>`` for
the released model, the mean gene state for the mean-pooled tiny checkpoint), started
from the shipped checkpoint, trained on the dataset's train split and scored on its fixed test
split (``<cls>`` + 255 genes, CPU, seed 0, in-process: :mod:`benchmarks.lightning_runs`).

The recipe's 20 epochs do not fit the CPU budget: the suite sets the epochs, and the 500
warm-up steps are scaled with them (``round(500 · epochs / 20)``, at most the run's steps), so
the schedule keeps the shape it would have in the recipe's run on this dataset.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from benchmarks.lightning_runs import SubsetDataModule, fit_predict, task_from_checkpoint
from benchmarks.quality import CHECKPOINT, LABEL, Dataset, score_row

METHOD = "LangCell-CE fine-tune (recipes/finetune.yaml, head on the pooled state)"
RECIPE = {"features": "pooled", "learning_rate": 5e-5, "weight_decay": 0.001, "min_lr_ratio": 0.0}
RECIPE_EPOCHS, RECIPE_WARMUP, BATCH_SIZE, GRADIENT_CLIP = 20, 500, 16, 1.0


def scaled_warmup(epochs: int, total_steps: int) -> int:
    """The recipe's 500 warm-up steps scaled by ``epochs / 20`` (at most ``total_steps``)."""
    return min(total_steps, round(RECIPE_WARMUP * epochs / RECIPE_EPOCHS))


def fine_tune_row(data: Dataset, corpus: str, epochs: int, workdir: Path, seed: int = 0,
                  learning_rate: float = RECIPE["learning_rate"], log=print) -> dict:
    """Fine-tune on the train split for ``epochs`` at peak ``learning_rate``; the test-split row."""
    from lightning_langcell.tasks.cell_classifier import CellTypeClassifier

    started = time.perf_counter()
    total = math.ceil(len(data.train) / BATCH_SIZE) * epochs
    warmup = scaled_warmup(epochs, total)
    module = SubsetDataModule(corpus, data.train, data.test, label_column=LABEL, texts=False, max_length=256,
                              batch_size=BATCH_SIZE, eval_batch_size=32, seed=seed)
    task = task_from_checkpoint(CellTypeClassifier, CHECKPOINT, warmup_steps=warmup,
                                **{**RECIPE, "learning_rate": learning_rate})
    predicted, steps = fit_predict(task, module, epochs, workdir, seed, gradient_clip_val=GRADIENT_CLIP)
    if module.classes != data.classes:
        raise RuntimeError(f"class order {module.classes} != {data.classes}")
    labels = [data.classes[i] for i in predicted]
    method = METHOD if learning_rate == RECIPE["learning_rate"] else f"{METHOD}, lr {learning_rate:g}"
    row = score_row(data, "fine-tune", method, labels, len(data.train), epochs=epochs, recipe_epochs=RECIPE_EPOCHS,
               steps=steps, warmup_steps=warmup, recipe_warmup_steps=RECIPE_WARMUP, seed=seed,
               features=RECIPE["features"], learning_rate=learning_rate,
               recipe_learning_rate=RECIPE["learning_rate"], seconds=round(time.perf_counter() - started, 2))
    log(f"  LangCell-CE fine-tune {data.name} lr {learning_rate:g}: macro-F1 {row['macro_f1']:.3f}, accuracy {row['accuracy']:.3f}, "
        f"{steps} steps, {row['seconds']:.1f} s")
    return row
