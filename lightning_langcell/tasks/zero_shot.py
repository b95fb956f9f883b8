"""Zero-shot annotation through Lightning: ``python -m lightning_langcell predict --config recipes/zero_shot.yaml``.

:class:`LangCellZeroShot` scores every cell of the data module's ``predict`` split (all cells)
with :class:`~lightning_langcell.inference.zero_shot.ZeroShotScorer`; its
:class:`ZeroShotPredictionWriter` (added by ``configure_callbacks``) puts the batches back in
cell order and writes, for each input .h5ad, an annotated copy (see
:mod:`lightning_langcell.inference.output`). With ground truth (``data.label_column``) it
computes accuracy, balanced accuracy, macro-F1 and weighted-F1, logs them to the trainer's
logger (``zero_shot/<metric>``) with a confusion-matrix figure (TensorBoard), and stores them in
``uns["langcell"]["metrics"]`` and ``LangCellZeroShot.results``. With ``few_shot_labels`` (an
obs column of the input files) the cells labelled there fit a few-shot adapter and every cell
also gets its prediction (:mod:`lightning_langcell.inference.few_shot_cells`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_langcell.inference.annotate import (
    build_scorer,
    check_several_classes,
    zero_shot_info,
)
from lightning_langcell.inference.adapters import DEFAULT_ADAPTER
from lightning_langcell.inference.classes import candidate_classes, truth_indices
from lightning_langcell.inference.few_shot_cells import (
    FEW_SHOT_PREDICTION_KEY,
    FEW_SHOT_SCORES_KEY,
    adapter_results,
    check_adapter,
    labelled_codes,
)
from lightning_langcell.inference.hierarchy import (
    DEFAULT_ANCESTOR_THRESHOLD,
    DEFAULT_THRESHOLD,
    check_hierarchy_classes,
    hierarchy_results,
)
from lightning_langcell.inference.metrics import classification_scores, confusion_matrix, confusion_matrix_figure
from lightning_langcell.inference.open_set import DEFAULT_UNKNOWN_THRESHOLD, check_unknown_threshold
from lightning_langcell.inference.output import ZeroShotAnnotations
from lightning_langcell.inference.prompts import DEFAULT_PROMPTS, prompt_templates
from lightning_langcell.models.zero_shot_scores import OFFICIAL_ALPHA, OFFICIAL_TEMPERATURE
from lightning_langcell.tasks.cell_outputs import CellPredictionWriter, CheckpointPredictionTask, log_metrics


class ZeroShotPredictionWriter(CellPredictionWriter):
    """Collects :class:`LangCellZeroShot` batches and, at the end, writes the annotated .h5ad files
    (rank 0, after gathering every rank's cells), logs the metrics and the confusion matrix."""

    message = "Zero-shot annotations written to"

    def finish(self, trainer: pl.Trainer, pl_module: LangCellZeroShot, rows: dict[str, np.ndarray]) -> list[Path]:
        datamodule, candidates = trainer.datamodule, pl_module.candidates
        predictions = rows["probabilities"].argmax(axis=1)
        info = zero_shot_info(candidates, pl_module.scorer, datamodule.hparams.label_column, len(rows["index"]),
                              len(datamodule.corpus), str(pl_module.hparams.init_from), pl_module.hparams.prompts)
        info["max_length"] = int(datamodule.hparams.max_length)
        info["unknown_threshold"] = pl_module.hparams.unknown_threshold
        if (rows["target"] >= 0).any():
            info["metrics"] = classification_scores(rows["target"], predictions, len(candidates))
            self._log(trainer, info["metrics"], confusion_matrix(rows["target"], predictions, len(candidates)),
                      candidates.names)
        hierarchy = None
        if pl_module.class_hierarchy is not None:
            hp = pl_module.hparams
            hierarchy, info["hierarchy"] = hierarchy_results(
                pl_module.class_hierarchy, rows["probabilities"], hp.backoff_threshold, hp.ancestor_threshold,
                rows["target"])
        few_shot = None
        if pl_module.few_shot_codes is not None:
            few_shot = adapter_results(pl_module.hparams.adapter, rows["probabilities"], rows["embedding"],
                                       pl_module.scorer.class_embedding.float().cpu(),
                                       pl_module.few_shot_codes[rows["index"]], candidates)
            info["few_shot"] = {**few_shot[2], "label_column": pl_module.hparams.few_shot_labels}
            predicted = few_shot[0][FEW_SHOT_PREDICTION_KEY].codes
            if (rows["target"] >= 0).any():
                known = predicted >= 0
                info["few_shot"]["metrics"] = classification_scores(rows["target"][known], predicted[known],
                                                                    len(candidates))
        pl_module.results = info

        def annotations_for(mine: np.ndarray, local_rows: np.ndarray, n_obs: int, source: dict) -> ZeroShotAnnotations:
            annotations = ZeroShotAnnotations.empty(n_obs, list(candidates.names), rows["embedding"].shape[1])
            annotations.set_rows(local_rows, rows["probabilities"][mine], rows["embedding"][mine])
            annotations.info = {**info, "source": str(source.get("path"))}
            annotations.unknown_threshold = pl_module.hparams.unknown_threshold
            if hierarchy is not None:
                annotations.extra_obs = hierarchy.take(mine).obs_columns(n_obs, local_rows)
            if few_shot is not None:
                codes = np.full(n_obs, -1, dtype=np.int64)
                codes[local_rows] = few_shot[0][FEW_SHOT_PREDICTION_KEY].codes[mine]
                scores = np.full((n_obs, len(candidates)), np.nan, dtype=np.float32)
                scores[local_rows] = few_shot[1][FEW_SHOT_SCORES_KEY][mine]
                annotations.extra_obs[FEW_SHOT_PREDICTION_KEY] = pd.Categorical.from_codes(
                    codes, categories=pd.Index(candidates.names, dtype=object))
                annotations.extra_obsm[FEW_SHOT_SCORES_KEY] = scores
            return annotations

        return self.write_sources(trainer, rows, annotations_for)

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float], matrix: np.ndarray, names: Sequence[str]) -> None:
        log_metrics(trainer, "zero_shot", metrics)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure") and importlib.util.find_spec("matplotlib") is not None:
                experiment.add_figure("zero_shot/confusion_matrix", confusion_matrix_figure(matrix, names), 0)
                logger.save()
            elif hasattr(experiment, "add_figure"):
                rank_zero_warn("matplotlib is not installed: no confusion-matrix figure (pip install matplotlib).")


class LangCellZeroShot(CheckpointPredictionTask):
    """Zero-shot cell-type annotation with a trained LangCell model (predict only).

    Args:
        init_from, text_tokenizer, output, overwrite: see :class:`CheckpointPredictionTask`
            (``output``: the annotated .h5ad copies).
        classes: candidate classes: None (the labels of ``data.label_column``), a list of labels
            or CL ids, or a type2text JSON (label or id → definition).
        type2text: definitions overriding the ontology; ``allow_missing_definitions``: score
            classes that have none as ``"cell type: X; "`` instead of raising.
        alpha, top_k, temperature, class_chunk_size: see ``ZeroShotScorer``.
        hierarchy, backoff_threshold, ancestor_threshold: Cell Ontology term per cell with
            back-off to a sure ancestor (see ``annotate`` and
            :mod:`lightning_langcell.inference.hierarchy`).
        prompts: class texts: ``"official"``, ``"ensemble"``, a template or a list of templates
            (see :mod:`lightning_langcell.inference.prompts`); checked here, before any data is read.
        few_shot_labels: obs column of the input file(s); its non-empty labels (candidate classes)
            mark the labelled cells an ``adapter`` (``probe`` or ``prototype``) is fitted on.
        unknown_threshold: obs ``langcell_unknown`` where the unknown score is above it (None: no
            such column; see ``annotate``).
    """

    writer_class = ZeroShotPredictionWriter

    def __init__(
        self,
        init_from: str,
        classes: Sequence[str] | str | None = None,
        type2text: str | None = None,
        allow_missing_definitions: bool = False,
        alpha: float = OFFICIAL_ALPHA,
        top_k: int | None = None,
        temperature: float = OFFICIAL_TEMPERATURE,
        class_chunk_size: int = 32,
        hierarchy: bool = False,
        backoff_threshold: float = DEFAULT_THRESHOLD,
        ancestor_threshold: float = DEFAULT_ANCESTOR_THRESHOLD,
        prompts: str | list[str] = DEFAULT_PROMPTS,
        few_shot_labels: str | None = None,
        adapter: str = DEFAULT_ADAPTER,
        unknown_threshold: float | None = DEFAULT_UNKNOWN_THRESHOLD,
        **kwargs,
    ):
        prompt_templates(prompts)
        check_adapter(adapter)
        check_unknown_threshold(unknown_threshold)
        super().__init__(init_from, **kwargs)  # saves the hyperparameters
        self.few_shot_codes: np.ndarray | None = None  # candidate class of each corpus row's few-shot label
        self.candidates = None
        self.scorer = None
        self.class_hierarchy = None
        self.label_map: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        datamodule = self.checked_datamodule()
        corpus = datamodule.corpus
        hp = self.hparams
        label_column = datamodule.hparams.label_column
        self.candidates = candidate_classes(hp.classes, corpus.obs, label_column, hp.type2text,
                                            hp.allow_missing_definitions)
        check_several_classes(self.candidates)
        if hp.hierarchy:
            self.class_hierarchy = check_hierarchy_classes(self.candidates.term_ids, self.candidates.names)
        if label_column is not None and datamodule.classes:
            self.label_map = torch.as_tensor(truth_indices(datamodule.classes, self.candidates))
        if hp.few_shot_labels is not None:
            self.few_shot_codes = labelled_codes(source_column(corpus, hp.few_shot_labels), hp.few_shot_labels,
                                                 self.candidates)

    def on_predict_start(self) -> None:
        hp = self.hparams
        self.scorer = build_scorer(self.model, self.candidates, self.text_tokenizer, self.device, prompts=hp.prompts,
                                   alpha=hp.alpha, top_k=hp.top_k, temperature=hp.temperature,
                                   class_chunk_size=hp.class_chunk_size)

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


def source_column(corpus, column: str) -> pd.DataFrame:
    """obs[``column``] of the corpus' input .h5ad files, one row per corpus cell (absent: no such column)."""
    import anndata

    obs = corpus.obs
    values = pd.Series(pd.NA, index=pd.RangeIndex(len(obs)), dtype="string")
    found = False
    for source in corpus.sources:
        path = source.get("path")
        if not path or not Path(path).is_file():
            continue
        source_obs = anndata.read_h5ad(path, backed="r").obs
        if column in source_obs.columns:
            found = True
            mine = (obs["source_file"].astype(str) == source["name"]).to_numpy()
            rows = obs["source_index"].to_numpy()[mine]
            values[mine] = source_obs[column].astype("string").to_numpy()[rows]
    return pd.DataFrame({column: values}) if found else pd.DataFrame(index=values.index)
