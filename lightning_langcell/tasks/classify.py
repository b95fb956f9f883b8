"""Shared base of the cell-type tasks (few-shot LangCell, linear probe, fine-tuning).

:class:`CellClassificationTask` takes the classes (and class texts) from the data module, trains
on the ``train`` split, reports accuracy, balanced accuracy, macro-F1 and weighted-F1 on ``val``
and ``test``, and writes ``test_results.json`` + ``test_predictions.csv`` into the trainer's
``log_dir``. A subclass provides three hooks:

- ``configure_classes(classes, class_texts)``: build what depends on the classes (a head, the
  tokenized class texts); called in ``setup`` and when a checkpoint is loaded without a trainer;
- ``forward(batch) -> outputs``: the model pass on a batch of cells;
- ``losses(outputs, labels) -> {name: scalar}`` (summed into the training loss) and
  ``scores(outputs) -> [B, C]`` (class scores; prediction = argmax).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Sequence, Unpack

import numpy as np
import torch
import torch.nn.functional as F

from lightning_langcell.data.masking import IGNORE_INDEX
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.metrics import classification_metric_collection
from lightning_langcell.models import LangCellModel
from lightning_langcell.tasks.base import AdamWSchedule, LangCellTask
from lightning_langcell.tasks.metrics import cells_per_class, write_results

CHECKPOINT_KEY = "cell_classes"


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over cells with a label (``labels != -100``); 0 (with a graph) if none.

    ``logits`` [B, C] (any real scores), ``labels`` [B] class indices.
    """
    if bool((labels != IGNORE_INDEX).any()):
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    return logits.sum() * 0.0


class CellClassificationTask(LangCellTask, ABC):
    """Base LightningModule of the cell-type classification tasks (see the module docstring).

    Takes the :class:`~lightning_langcell.tasks.base.AdamWSchedule` keys (AdamW and its schedule);
    the defaults are the base task's with Adam's usual ``betas=(0.9, 0.999)``.
    """

    #: whether ``configure_classes`` needs the class texts of the data module
    uses_class_texts = False
    schedule_defaults: AdamWSchedule = {**LangCellTask.schedule_defaults, "betas": (0.9, 0.999)}

    def __init__(self, **schedule: Unpack[AdamWSchedule]):
        super().__init__(**schedule)
        self.classes: list[str] = []
        self.class_texts: list[str] = []
        self.val_metrics = None
        self.test_metrics = None
        self._test_rows: list[torch.Tensor] = []
        self.last_results: dict[str, Any] | None = None

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def configure_classes(self, classes: Sequence[str], class_texts: Sequence[str]) -> None:
        """Build the parts that depend on the classes (called once the classes are known)."""

    @abstractmethod
    def losses(self, outputs: Any, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses {name: scalar} (summed) from ``forward``'s outputs and labels [B]."""

    @abstractmethod
    def scores(self, outputs: Any) -> torch.Tensor:
        """Class scores [B, C] from ``forward``'s outputs; the prediction is their argmax."""

    # ------------------------------------------------------------------ classes
    def set_classes(self, classes: Sequence[str], class_texts: Sequence[str] = ()) -> None:
        """Fix the class order (index i = ``classes[i]``) and build the class-dependent parts."""
        classes = [str(name) for name in classes]
        if not classes:
            raise LangCellInputError(
                f"{type(self).__name__} needs labelled cells, but no class was found.",
                "Set data.label_column to the obs column holding the cell types (e.g. cell_type).",
            )
        if len(classes) < 2:
            raise LangCellInputError(
                f"{type(self).__name__} needs at least 2 classes to tell apart, but every labelled cell is "
                f"{classes[0]!r}.",
                "Train on data with several cell types in data.label_column (or a column with more than one "
                "label); to score cells of one type against others, use zero-shot with model.init_args.classes.",
            )
        if self.classes and classes != self.classes:
            raise LangCellInputError(
                f"The data has classes {classes}, but this model was set up for {self.classes}.",
                "Use the same data (and data.label_column) as the model was trained with.",
            )
        self.classes = classes
        self.class_texts = [str(text) for text in class_texts]
        self.configure_classes(self.classes, self.class_texts)
        if self.val_metrics is None:
            self.val_metrics = classification_metric_collection(len(classes), prefix="val/")
            self.test_metrics = classification_metric_collection(len(classes), prefix="test/")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "classes"):
            raise LangCellInputError(
                f"{type(self).__name__} reads its classes from a LangCellDataModule.",
                "Pass datamodule=LangCellDataModule(...) to the Trainer (the CLI's `data:` section).",
            )
        super().setup(stage)
        if not datamodule.classes and stage == "predict":
            return  # unlabelled cells to annotate: the classes come with the checkpoint (on_load_checkpoint)
        texts = datamodule.class_texts() if self.uses_class_texts and datamodule.classes else []
        self.set_classes(datamodule.classes, texts)
        if stage == "fit":
            check_class_sizes(datamodule, self.classes)

    # ------------------------------------------------------------------ steps
    def _batch_labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "labels" not in batch:
            raise LangCellInputError(
                "The batch carries no labels.", "Set data.label_column to the obs column with the cell types."
            )
        return batch["labels"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.losses(self(batch), self._batch_labels(batch))
        loss = sum(losses.values())
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        if len(losses) > 1:
            self.log_dict({f"train/loss_{k}": v.detach() for k, v in losses.items()}, batch_size=size)
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], metrics, stage: str) -> torch.Tensor:
        labels = self._batch_labels(batch)
        outputs = self(batch)
        losses = self.losses(outputs, labels)
        predictions = self.scores(outputs).argmax(dim=-1)
        metrics.update(predictions, labels)
        size = batch["input_ids"].shape[0]
        self.log(f"{stage}/loss", sum(losses.values()), batch_size=size, sync_dist=True)
        return predictions

    def _log_epoch_metrics(self, metrics) -> dict[str, float]:
        values = {name: value.item() for name, value in metrics.compute().items()}
        metrics.reset()
        self.log_dict(values, prog_bar=False)
        return values

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        predictions = self._evaluate(batch, self.test_metrics, "test")
        self._test_rows.append(torch.stack([batch["index"], batch["labels"], predictions], dim=1))

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch_metrics(self.test_metrics)
        rows = torch.cat(self._test_rows) if self._test_rows else torch.zeros(0, 3, dtype=torch.long)
        rows = self._gather_rows(rows.to(self.device)).cpu().numpy()
        self._test_rows = []
        metrics = {name.split("/", 1)[1]: value for name, value in values.items()}
        self.last_results = self.results_record(metrics, len(rows))
        directory = self.trainer.log_dir  # a broadcast under DDP: every rank asks
        if self.trainer.is_global_zero:
            predictions = {"cell_index": rows[:, 0], "target": rows[:, 1], "prediction": rows[:, 2]}
            path = write_results(directory, self.last_results, predictions, self.classes)
            self.print(f"Test results written to {path}")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Per cell: corpus position ``index`` [B], class ``scores`` [B, C] and ``prediction`` [B]."""
        scores = self.scores(self(batch))
        return {"index": batch["index"], "scores": scores, "prediction": scores.argmax(dim=-1)}

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's rows [n_r, K] in rank order (ranks may hold different n_r)."""
        if self.trainer.world_size == 1:
            return rows
        sizes = self.all_gather(torch.tensor(rows.shape[0], device=rows.device)).view(-1)
        padded = rows.new_zeros((int(sizes.max()), rows.shape[1]))
        padded[: rows.shape[0]] = rows
        gathered = self.all_gather(padded)
        return torch.cat([gathered[rank, : int(size)] for rank, size in enumerate(sizes)])

    # ------------------------------------------------------------------ results
    def results_record(self, metrics: dict[str, float], evaluated_cells: int) -> dict[str, Any]:
        """What ``test_results.json`` holds: metrics, classes, seeds, split sizes, settings."""
        datamodule = self.trainer.datamodule
        hparams = dict(getattr(datamodule, "hparams", {}))
        splits = getattr(datamodule, "splits", {})
        labels = _corpus_labels(datamodule)
        seed = os.environ.get("PL_GLOBAL_SEED")
        record: dict[str, Any] = {
            "task": type(self).__name__,
            "metrics": metrics,
            "evaluated_cells": evaluated_cells,
            "classes": self.classes,
            "class_texts": self.class_texts or None,
            "seed": hparams.get("seed"),
            "global_seed": None if seed is None else int(seed),
            "k_shot": hparams.get("k_shot"),
            "split_fractions": None if hparams.get("k_shot") is not None else hparams.get("split"),
            "split_used": split_used(hparams),
            "split_sizes": {name: int(len(indices)) for name, indices in splits.items()},
            "data": hparams.get("data"),
            "label_column": hparams.get("label_column"),
            "checkpoint": self.trainer.ckpt_path,
            "hyperparameters": dict(self.hparams),
        }
        if labels is not None:
            for name in ("train", "test"):
                if name in splits:
                    record[f"{name}_cells_per_class"] = cells_per_class(labels[splits[name]], self.classes)
        return record

    # --------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the classes, class texts and training cells (and, for a task holding a whole
        ``LangCellModel`` as ``self.model``, its config: ``LangCellCheckpointMixin``)."""
        if isinstance(getattr(self, "model", None), LangCellModel):
            super().on_save_checkpoint(checkpoint)
        saved: dict[str, Any] = {"classes": list(self.classes), "class_texts": list(self.class_texts)}
        trainer = getattr(self, "_trainer", None)
        splits = getattr(getattr(trainer, "datamodule", None), "splits", None) or {}
        if "train" in splits:
            saved["train_cells"] = torch.as_tensor(np.asarray(splits["train"], dtype=np.int64))
        checkpoint[CHECKPOINT_KEY] = saved

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        if not self.classes:  # LightningModule.load_from_checkpoint: no trainer, no data module
            self.set_classes(saved["classes"], saved.get("class_texts", ()))
        elif list(saved["classes"]) != self.classes:
            raise LangCellInputError(
                f"The checkpoint was trained on classes {list(saved['classes'])}, the data has {self.classes}.",
                "Evaluate on the data (and data.label_column) it was trained with; to annotate other "
                "cells, predict with data.label_column null.",
            )
        trainer = getattr(self, "_trainer", None)
        splits = getattr(getattr(trainer, "datamodule", None), "splits", None) or {}
        if "train_cells" in saved and "test" in splits and not trainer.predicting:
            leaked = np.intersect1d(saved["train_cells"].cpu().numpy(), splits["test"])
            if leaked.size:
                raise LangCellInputError(
                    f"{leaked.size} cells of this test split were training cells of the checkpoint "
                    "(the split differs from the one used in fit).",
                    "Pass the same data.seed, data.k_shot and data.split as in the fit run.",
                )


def check_class_sizes(datamodule, classes: Sequence[str]) -> None:
    """Refuse a stratified train/test split with classes of < 2 cells (they cannot be in both).

    Only for the plain stratified split: k-shot splits check their classes themselves, and a
    held-out (``split_by``) test set may lack training classes on purpose.
    """
    hparams = getattr(datamodule, "hparams", {})
    labels = _corpus_labels(datamodule)
    if labels is None or hparams.get("k_shot") or hparams.get("split_by") is not None:
        return
    fractions = hparams.get("split") or ()
    if sum(1 for fraction in fractions if fraction > 0) < 2:
        return
    small = [f"{name!r} ({n} cell)" for name, n in cells_per_class(labels, classes).items() if n < 2]
    if small:
        column = hparams.get("label_column")
        raise LangCellInputError(
            f"{len(small)} class(es) have fewer than 2 labelled cells: {', '.join(small)}; a stratified "
            "split cannot put them in both the training and the test split.",
            f"Remove or relabel those cells in the .h5ad (e.g. adata = adata[adata.obs[{column!r}] != "
            f"{small[0].split(' (')[0]}].copy()), or merge the class into another one.",
        )


def split_used(hparams: Any) -> dict[str, str]:
    """How each split was drawn, in words (``test_results.json``), for the data module's settings."""
    from lightning_langcell.data.datamodule import K_SHOT_REST_SPLIT

    k_shot, split_by = hparams.get("k_shot"), hparams.get("split_by")
    held_out = f"the cells whose {split_by} is in {list(hparams.get('held_out') or [])}"
    if k_shot is not None:
        _, val, test = (round(100 * fraction) for fraction in K_SHOT_REST_SPLIT)
        if split_by is not None:
            return {"train": f"{k_shot} labelled cells per class (seeded), outside the held-out cells",
                    "val": "the other labelled cells outside the held-out cells", "test": held_out}
        return {"train": f"{k_shot} labelled cells per class (seeded)",
                "val": f"{val}% of the other labelled cells (stratified, seeded)",
                "test": f"{test}% of the other labelled cells (stratified, seeded)"}
    train, val, test = (round(100 * fraction, 2) for fraction in hparams.get("split") or (0, 0, 0))
    if split_by is not None:
        return {"train": f"{train}% of the cells outside the held-out ones (stratified, seeded)",
                "val": f"{round(val + test, 2)}% of the cells outside the held-out ones", "test": held_out}
    return {"train": f"{train}% of the cells (stratified, seeded)", "val": f"{val}% (stratified, seeded)",
            "test": f"{test}% (stratified, seeded)"}


def _corpus_labels(datamodule) -> np.ndarray | None:
    """Class index of every corpus cell (-1 or -100: unknown), from the data module's datasets."""
    dataset = getattr(datamodule, "datasets", {}).get("predict")
    labels = getattr(dataset, "labels", None)
    return None if labels is None else np.asarray(labels)
