"""Cell embeddings through Lightning: ``python -m lightning_langcell predict --config recipes/embed.yaml``.

:class:`LangCellEmbedder` embeds every cell of the data module's ``predict`` split (all cells)
with the checkpoint's cell encoder; its :class:`EmbeddingWriter` writes, for each input .h5ad, a
new copy with ``obsm["X_langcell"]`` (L2-normalised, NaN rows for cells that were not
tokenized) and ``uns["langcell"]`` (settings + ``embedding_metrics``). The scores
(:mod:`lightning_langcell.inference.embedding_metrics`, :mod:`lightning_langcell.inference.retrieval`)
are computed over all cells of all inputs together:

- with labels (``data.label_column``): ``silhouette_label`` (scib's), ``knn_purity`` and cell ↔ text
  retrieval (recall@1/5/10 both ways, text→cell precision@k) against the class texts of the
  labels, built as zero-shot builds them; classes with the same text share it. Across datasets
  whose label names differ use ``data.label_column: cell_type_ontology_term_id``. A label
  column holding no label skips them with a warning; ``data.label_column: null`` skips them
  (a column absent from every input is the data module's error);
- with ``batch_column`` (e.g. ``source_file``: the input file of each cell, or any obs column of
  the inputs): ``silhouette_batch`` (scib's: within each label when labels are given) and
  ``knn_batch_mixing``.

They are logged to the trainer's loggers (``embed/<metric>``) and stored in
``uns["langcell"]["embedding_metrics"]`` and ``LangCellEmbedder.results``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.classes import candidate_classes, obs_labels, truth_indices
from lightning_langcell.inference.embedding_metrics import DEFAULT_MAX_CELLS, DEFAULT_NEIGHBORS, embedding_scores
from lightning_langcell.inference.output import CellEmbeddings
from lightning_langcell.inference.retrieval import DEFAULT_KS, embed_texts, retrieval_metrics
from lightning_langcell.tasks.cell_outputs import CellPredictionWriter, CheckpointPredictionTask, log_metrics


class EmbeddingWriter(CellPredictionWriter):
    """Collects :class:`LangCellEmbedder` batches; at the end scores them (rank 0, all ranks' cells),
    logs the scores and writes one .h5ad with ``obsm["X_langcell"]`` per input file."""

    message = "Cell embeddings written to"

    def finish(self, trainer: pl.Trainer, pl_module: LangCellEmbedder, rows: dict[str, np.ndarray]) -> list[Path]:
        datamodule, hp = trainer.datamodule, pl_module.hparams
        embeddings, index = rows["embedding"], rows["index"]
        info: dict[str, Any] = {
            "task": "embed",
            "model": str(hp.init_from),
            "label_column": datamodule.hparams.label_column,
            "batch_column": hp.batch_column,
            "n_neighbors": hp.n_neighbors,
            "max_cells": hp.max_cells,
            "seed": hp.seed,
            "n_cells_embedded": int(len(index)),
            "n_cells_not_embedded": int(len(datamodule.corpus) - len(index)),
        }
        if pl_module.texts:
            info["retrieval_texts"] = list(pl_module.texts)
        info["embedding_metrics"] = pl_module.scores(embeddings, index)
        if info["embedding_metrics"]:
            log_metrics(trainer, "embed", info["embedding_metrics"])
        pl_module.results = info

        def embeddings_for(mine: np.ndarray, local_rows: np.ndarray, n_obs: int, source: dict) -> CellEmbeddings:
            results = CellEmbeddings.empty(n_obs, embeddings.shape[1])
            results.set_rows(local_rows, embeddings[mine])
            results.info = {**info, "source": str(source.get("path"))}
            return results

        return self.write_sources(trainer, rows, embeddings_for)


class LangCellEmbedder(CheckpointPredictionTask):
    """Cell embeddings of a trained LangCell model, with embedding and retrieval scores (predict only).

    Args:
        init_from, text_tokenizer, output, overwrite: see :class:`CheckpointPredictionTask`
            (``output``: the .h5ad copies with the embeddings).
        batch_column: corpus or input obs column naming each cell's batch (``source_file``: its
            input file); None: no batch scores.
        retrieval: score cell ↔ text retrieval against the class texts of the labels.
        type2text: definitions overriding the ontology; ``allow_missing_definitions``: give
            labels without one the text ``"cell type: X; "`` (False: raise, as zero-shot does).
        n_neighbors: k of the kNN scores. ``max_cells``: cells drawn (``seed``) for the
            silhouettes and as kNN queries. ``text_batch_size``: texts per encoder pass.
    """

    writer_class = EmbeddingWriter

    def __init__(
        self,
        init_from: str,
        batch_column: str | None = None,
        retrieval: bool = True,
        type2text: str | None = None,
        allow_missing_definitions: bool = True,
        n_neighbors: int = DEFAULT_NEIGHBORS,
        max_cells: int = DEFAULT_MAX_CELLS,
        seed: int = 0,
        text_batch_size: int = 64,
        **kwargs,
    ):
        super().__init__(init_from, **kwargs)  # saves the hyperparameters
        self.labels: pd.Series | None = None  # per corpus row, <NA> when unknown
        self.batches: np.ndarray | None = None  # per corpus row, None when unknown
        self.texts: list[str] = []  # distinct class texts of the labels
        self.text_of_cell: np.ndarray | None = None  # per corpus row, -1 when unknown
        self.text_embeddings: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        datamodule = self.checked_datamodule()
        corpus = datamodule.corpus
        hp = self.hparams
        if hp.batch_column is not None:
            self.batches = batch_values(corpus, hp.batch_column)
        label_column = self.trainer.datamodule.hparams.label_column
        if label_column is None:
            return
        labels = obs_labels(corpus.obs, label_column)
        if not labels.notna().any():
            rank_zero_warn(f"obs[{label_column!r}] holds no label: silhouette_label, knn_purity and retrieval are "
                           "skipped (set data.label_column to the column of your cell types).")
            return
        self.labels = labels
        if hp.retrieval:
            with warnings.catch_warnings():  # classes with one text share it here: no tie to warn about
                warnings.filterwarnings("ignore", message="Classes with identical texts")
                classes = candidate_classes(None, corpus.obs, label_column, hp.type2text,
                                            hp.allow_missing_definitions)
            self.texts = list(dict.fromkeys(classes.texts))  # classes with one text share it
            text_of_class = np.array([self.texts.index(text) for text in classes.texts] + [-1])
            self.text_of_cell = text_of_class[truth_indices(labels, classes)]  # index -1 -> the appended -1

    def on_predict_start(self) -> None:
        if self.texts:
            self.text_embeddings = embed_texts(self.model, self.texts, self.text_tokenizer,
                                               self.hparams.text_batch_size, self.device)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Per cell: corpus row ``index`` [B] and L2-normalised ``embedding`` [B, E]."""
        _, embedding = self.model.encode_cells(batch["input_ids"], batch["attention_mask"])
        return {"index": batch["index"], "embedding": embedding}

    def scores(self, embeddings: np.ndarray, rows: np.ndarray) -> dict[str, float]:
        """Embedding and retrieval scores of the cells at corpus ``rows`` [n] with ``embeddings`` [n, E]."""
        hp = self.hparams
        scores = embedding_scores(
            embeddings,
            labels=None if self.labels is None else self.labels.to_numpy(dtype=object)[rows],
            batches=None if self.batches is None else self.batches[rows],
            k=hp.n_neighbors, max_cells=hp.max_cells, seed=hp.seed,
        )
        if self.text_embeddings is not None:
            texts = self.text_embeddings.cpu()
            scores.update(retrieval_metrics(embeddings, texts, self.text_of_cell[rows], DEFAULT_KS))
        return scores


def batch_values(corpus: Any, column: str) -> np.ndarray:
    """The ``column`` value of every corpus cell (object [n], None when missing): from the corpus
    metadata, else read from the obs of its input .h5ad files."""
    if column in corpus.obs.columns:
        return _objects(corpus.obs[column])
    per_source, available = {}, set(corpus.obs.columns)
    for source in corpus.sources:
        path = source.get("path")
        found, columns = _read_obs_column(path, column) if path and Path(path).is_file() else (None, [])
        available.update(columns)
        per_source[source["name"]] = found
    if any(found is None for found in per_source.values()):
        raise LangCellInputError(
            f"Batch column {column!r} is not in the obs of every input (available columns: {sorted(available)}).",
            "Set model.init_args.batch_column to one of them (source_file: the input file of each cell), "
            "or to null for no batch scores.",
        )
    source_of_cell = corpus.obs["source_file"].astype(str).to_numpy()
    rows = corpus.obs["source_index"].to_numpy()
    values = np.empty(len(rows), dtype=object)
    for name, found in per_source.items():
        mine = source_of_cell == name
        values[mine] = found[rows[mine]]
    return values


def _read_obs_column(path: str, column: str) -> tuple[np.ndarray | None, list[str]]:
    """(values of obs[column] in an .h5ad as object array, None when absent; the obs column names)."""
    import anndata
    import h5py

    with h5py.File(path, "r") as store:
        columns = [str(name) for name in store["obs"].attrs.get("column-order", [])]
        if column not in columns:
            return None, columns
        return _objects(pd.Series(anndata.io.read_elem(store["obs"][column]))), columns


def _objects(values: pd.Series) -> np.ndarray:
    """Values as strings in an object array, None where missing."""
    values = values.astype("string")
    return values.astype(object).where(values.notna(), None).to_numpy()
