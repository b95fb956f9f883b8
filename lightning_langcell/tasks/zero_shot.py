"""Zero-shot annotation through Lightning: ``python -m lightning_langcell predict --config recipes/zero_shot.yaml``.

:class:`LangCellZeroShot` scores every cell of the data module's ``predict`` split (all cells)
with :class:`~lightning_langcell.inference.zero_shot.ZeroShotScorer`; its
:class:`ZeroShotPredictionWriter` (added by ``configure_callbacks``) puts the batches back in
cell order and writes, for each input .h5ad, an annotated copy (see
:mod:`lightning_langcell.inference.output`). With ground truth (``data.label_column``) it
computes accuracy, balanced accuracy, macro-F1 and weighted-F1, logs them to the trainer's
logger (``zero_shot/<metric>``) with a confusion-matrix figure (TensorBoard), and stores them in
``uns["langcell"]["metrics"]`` and ``LangCellZeroShot.results``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.annotate import (
    build_scorer,
    check_gene_vocabulary,
    load_zero_shot_model,
    zero_shot_info,
)
from lightning_langcell.inference.classes import candidate_classes, truth_indices
from lightning_langcell.inference.metrics import classification_metrics, confusion_matrix, confusion_matrix_figure
from lightning_langcell.inference.output import ZeroShotAnnotations, h5ad_n_obs, write_annotated_copy, write_h5ad
from lightning_langcell.models.zero_shot_scores import OFFICIAL_ALPHA, OFFICIAL_TEMPERATURE


class LangCellZeroShot(pl.LightningModule):
    """Zero-shot cell-type annotation with a trained LangCell model (predict only).

    Args:
        checkpoint: our format, the official layout, a Lightning ``.ckpt`` or a registered name.
        classes: candidate classes: None (the labels of ``data.label_column``), a list of labels
            or CL ids, or a type2text JSON (label or id → definition).
        type2text: definitions overriding the ontology; ``allow_missing_definitions``: score
            classes that have none as ``"cell type: X; "`` instead of raising.
        text_tokenizer: text tokenizer path; None: the checkpoint's.
        alpha, top_k, temperature, class_chunk_size: see ``ZeroShotScorer``.
        output: annotated .h5ad to write (one input), or a folder (several inputs); None:
            ``<trainer.default_root_dir>/<input name>.langcell.h5ad``.
        overwrite: replace existing outputs.
    """

    def __init__(
        self,
        checkpoint: str,
        classes: Sequence[str] | str | None = None,
        type2text: str | None = None,
        allow_missing_definitions: bool = False,
        text_tokenizer: str | None = None,
        alpha: float = OFFICIAL_ALPHA,
        top_k: int | None = None,
        temperature: float = OFFICIAL_TEMPERATURE,
        class_chunk_size: int = 32,
        output: str | None = None,
        overwrite: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model, self.text_tokenizer, self.gene_vocabulary = load_zero_shot_model(checkpoint, text_tokenizer)
        self.candidates = None
        self.scorer = None
        self.label_map: torch.Tensor | None = None
        self.results: dict[str, Any] = {}

    def configure_callbacks(self):
        return [ZeroShotPredictionWriter(self.hparams.output, self.hparams.overwrite)]

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        corpus = getattr(datamodule, "corpus", None)
        if corpus is None:
            raise LangCellInputError(f"{type(self).__name__} reads its cells from a LangCellDataModule.",
                                     "Pass datamodule=LangCellDataModule(...) (the CLI's `data:` section).")
        check_gene_vocabulary(self.model, int(corpus.manifest["vocab_size"]), corpus.vocabulary_checksum,
                              self.gene_vocabulary)
        hp = self.hparams
        label_column = datamodule.hparams.label_column
        self.candidates = candidate_classes(hp.classes, corpus.obs, label_column, hp.type2text,
                                            hp.allow_missing_definitions)
        if label_column is not None and datamodule.classes:
            self.label_map = torch.as_tensor(truth_indices(datamodule.classes, self.candidates))

    def on_predict_start(self) -> None:
        hp = self.hparams
        self.scorer = build_scorer(self.model, self.candidates, self.text_tokenizer, self.device, alpha=hp.alpha,
                                   top_k=hp.top_k, temperature=hp.temperature, class_chunk_size=hp.class_chunk_size)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Per cell: corpus row ``index`` [B], final ``probabilities`` [B, C], ``embedding`` [B, E],
        ``target`` [B] (candidate index of the true label, -1 when unknown or not a candidate)."""
        out = self.scorer(batch["input_ids"], batch["attention_mask"])
        target = torch.full_like(batch["index"], -1)
        if self.label_map is not None and "labels" in batch:
            labels = batch["labels"]
            known = labels >= 0
            target[known] = self.label_map.to(labels.device)[labels[known]]
        return {"index": batch["index"], "probabilities": out.final_probs, "embedding": out.cell_embedding,
                "target": target}


class ZeroShotPredictionWriter(BasePredictionWriter):
    """Collects :class:`LangCellZeroShot` batches and, at the end, writes the annotated .h5ad files
    (rank 0, after gathering every rank's cells), logs the metrics and the confusion matrix."""

    def __init__(self, output: str | os.PathLike | None = None, overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output = output
        self.overwrite = overwrite
        self._parts: list[dict[str, np.ndarray]] = []
        self.written: list[Path] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self._parts.append({key: value.detach().float().cpu().numpy() if value.is_floating_point()
                            else value.detach().cpu().numpy() for key, value in prediction.items()})

    def _gathered(self, trainer: pl.Trainer) -> dict[str, np.ndarray] | None:
        """This rank's rows, or all ranks' on rank 0 (None on the other ranks), sorted by corpus row."""
        local = {key: np.concatenate([part[key] for part in self._parts]) for key in self._parts[0]} \
            if self._parts else {}
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            if not trainer.is_global_zero:
                return None
            parts = [part for part in gathered if part]
            local = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        order = np.argsort(local["index"], kind="stable")
        return {key: value[order] for key, value in local.items()}

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: LangCellZeroShot) -> None:
        rows = self._gathered(trainer)
        self._parts = []
        if rows is None:
            return
        datamodule, candidates = trainer.datamodule, pl_module.candidates
        predictions = rows["probabilities"].argmax(axis=1)
        info = zero_shot_info(candidates, pl_module.scorer, datamodule.hparams.label_column, len(rows["index"]),
                              len(datamodule.corpus), str(pl_module.hparams.checkpoint))
        if (rows["target"] >= 0).any():
            info["metrics"] = classification_metrics(rows["target"], predictions, len(candidates))
            self._log(trainer, info["metrics"], confusion_matrix(rows["target"], predictions, len(candidates)),
                      candidates.names)
        pl_module.results = info
        self.written = self._write_sources(trainer, rows, info, candidates.names)
        for path in self.written:
            pl_module.print(f"Zero-shot annotations written to {path}")

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float], matrix: np.ndarray, names: Sequence[str]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({f"zero_shot/{key}": float(value) for key, value in metrics.items()}, step=0)
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure") and importlib.util.find_spec("matplotlib") is not None:
                experiment.add_figure("zero_shot/confusion_matrix", confusion_matrix_figure(matrix, names), 0)
            elif hasattr(experiment, "add_figure"):
                rank_zero_warn("matplotlib is not installed: no confusion-matrix figure (pip install matplotlib).")
            logger.save()

    def _targets(self, trainer: pl.Trainer, sources: list[dict]) -> list[Path]:
        names = [Path(source.get("path") or f"cells_{i}.h5ad").stem for i, source in enumerate(sources)]
        if self.output is not None and Path(self.output).suffix == ".h5ad":
            if len(sources) > 1:
                raise LangCellInputError(f"{len(sources)} inputs cannot all be written to {self.output}.",
                                         "Pass a folder as model.init_args.output.")
            return [Path(self.output)]
        folder = Path(self.output) if self.output is not None else Path(trainer.default_root_dir)
        return [folder / f"{name}.langcell.h5ad" for name in names]

    def _write_sources(self, trainer: pl.Trainer, rows: dict[str, np.ndarray], info: dict[str, Any],
                       classes: Sequence[str]) -> list[Path]:
        """One annotated copy per input file of the corpus (results at their source rows)."""
        import anndata

        corpus = trainer.datamodule.corpus
        obs = corpus.obs.iloc[rows["index"]]
        source_of_row = obs["source_file"].astype(str).to_numpy()
        written = []
        for source, target in zip(corpus.sources, self._targets(trainer, corpus.sources)):
            mine = source_of_row == source["name"]
            path = source.get("path")
            on_disk = bool(path) and Path(path).is_file()
            n_obs = h5ad_n_obs(path) if on_disk else int(mine.sum())
            annotations = ZeroShotAnnotations.empty(n_obs, list(classes), rows["embedding"].shape[1])
            local_rows = obs["source_index"].to_numpy()[mine] if on_disk else np.arange(n_obs)
            annotations.set_rows(local_rows, rows["probabilities"][mine], rows["embedding"][mine])
            annotations.info = {**info, "source": str(path)}
            if on_disk:
                written.append(write_annotated_copy(path, target, annotations, self.overwrite))
            else:  # the corpus came from an in-memory AnnData: write its obs and the results only
                adata = anndata.AnnData(obs=obs[mine].set_index("obs_name").drop(columns=["source_file"]))
                annotations.add_to(adata)
                written.append(write_h5ad(adata, target, self.overwrite))
        return written
