"""Shared plumbing of the predict-only tasks (zero-shot, embedding): their base task (checkpoint,
writer callback, checked data module), batches gathered back into cell order, one result .h5ad
per input file, metrics to the loggers."""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.annotate import check_gene_vocabulary, load_zero_shot_model
from lightning_langcell.inference.output import CellResults, h5ad_n_obs, write_annotated_copy, write_h5ad
from lightning_langcell.tasks.base import use_trained_lengths
from lightning_langcell.tasks.packed_batches import check_packed_batches

# (mask of the gathered rows from this source [R], their rows in the source file [S], the
# file's cell count, the source entry of the corpus manifest) -> the results of that file
ResultsForSource = Callable[[np.ndarray, np.ndarray, int, dict], CellResults]


def log_metrics(trainer: pl.Trainer, prefix: str, metrics: Mapping[str, float]) -> None:
    """``<prefix>/<name>`` scalars (step 0) to every logger of the trainer."""
    for logger in trainer.loggers:
        logger.log_metrics({f"{prefix}/{key}": float(value) for key, value in metrics.items()}, step=0)
        logger.save()


class CellPredictionWriter(BasePredictionWriter, abc.ABC):
    """Collects prediction batches (dicts of tensors [B, ...] with the corpus row ``index``) and,
    at the end of the epoch, hands all cells sorted by corpus row to :meth:`finish` (rank 0,
    after gathering every rank's cells). Outputs: ``output`` (a .h5ad for one input, or a
    folder), default ``<trainer.default_root_dir>/<input name>.langcell.h5ad``."""

    message = "Results written to"

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

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self._gathered(trainer)
        self._parts = []
        if rows is None:
            return
        self.written = self.finish(trainer, pl_module, rows)
        for path in self.written:
            pl_module.print(f"{self.message} {path}")

    @abc.abstractmethod
    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, rows: dict[str, np.ndarray]) -> list[Path]:
        """Compute, log and write the results of all cells (``rows``, sorted by corpus row); returns the files."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every output path before the first cell is scored (the data module is set up
        first): an existing output without ``overwrite`` fails now, not after all the work."""
        from lightning_langcell.inference.output import check_output_path

        corpus = getattr(getattr(trainer, "datamodule", None), "corpus", None)
        if stage != "predict" or corpus is None or not trainer.is_global_zero:
            return
        for source, target in zip(corpus.sources, self._targets(trainer, corpus.sources)):
            path = source.get("path")
            check_output_path(target, self.overwrite, path if path and Path(path).is_file() else None)

    def _targets(self, trainer: pl.Trainer, sources: list[dict]) -> list[Path]:
        names = [Path(source.get("path") or f"cells_{i}.h5ad").stem for i, source in enumerate(sources)]
        if self.output is not None and Path(self.output).suffix == ".h5ad":
            if len(sources) > 1:
                raise LangCellInputError(f"{len(sources)} inputs cannot all be written to {self.output}.",
                                         "Pass a folder as model.init_args.output.")
            return [Path(self.output)]
        folder = Path(self.output) if self.output is not None else Path(trainer.default_root_dir)
        return [folder / f"{name}.langcell.h5ad" for name in names]

    def write_sources(self, trainer: pl.Trainer, rows: dict[str, np.ndarray],
                      results_for: ResultsForSource) -> list[Path]:
        """One copy per input file of the corpus with ``results_for(...)`` at its cells' rows."""
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
            local_rows = obs["source_index"].to_numpy()[mine] if on_disk else np.arange(n_obs)
            results = results_for(mine, local_rows, n_obs, source)
            if on_disk:
                written.append(write_annotated_copy(path, target, results, self.overwrite))
            else:  # the corpus came from an in-memory AnnData: write its obs and the results only
                adata = anndata.AnnData(obs=obs[mine].set_index("obs_name").drop(columns=["source_file"]))
                results.add_to(adata)
                written.append(write_h5ad(adata, target, self.overwrite))
        return written


class CheckpointPredictionTask(pl.LightningModule):
    """Base of the predict-only tasks that run a trained LangCell checkpoint over the data module's
    corpus: loads the model, its text tokenizer and gene vocabulary from ``init_from``, and adds its
    ``writer_class`` (built from the ``output`` and ``overwrite`` hyperparameters) as a callback.
    Saves the hyperparameters of the whole ``__init__`` chain (this class's and the subclass's).

    Args:
        init_from: the checkpoint to use (the name every task gives "start from this checkpoint"):
            our format, the official layout, a Lightning ``.ckpt`` or a registered name.
        text_tokenizer: text tokenizer path; None: the checkpoint's.
        output: .h5ad to write (one input), or a folder (several inputs); None:
            ``<trainer.default_root_dir>/<input name>.langcell.h5ad``.
        overwrite: replace existing outputs.
    """

    writer_class: type[CellPredictionWriter]

    def __init__(self, init_from: str, text_tokenizer: str | None = None, output: str | None = None,
                 overwrite: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.model, self.text_tokenizer, self.gene_vocabulary = load_zero_shot_model(init_from, text_tokenizer)
        self.results: dict[str, Any] = {}  # what the writer recorded of the last prediction run

    def configure_callbacks(self):
        return [self.writer_class(self.hparams.output, self.hparams.overwrite)]

    def checked_datamodule(self):
        """The trainer's data module, after checking its corpus was tokenized with the model's genes;
        an unset ``data.max_length`` becomes the length the checkpoint was trained with."""
        datamodule = getattr(self.trainer, "datamodule", None)
        corpus = getattr(datamodule, "corpus", None)
        if corpus is None:
            raise LangCellInputError(f"{type(self).__name__} reads its cells from a LangCellDataModule.",
                                     "Pass datamodule=LangCellDataModule(...) (the CLI's `data:` section).")
        check_packed_batches(self, datamodule)
        check_gene_vocabulary(self.model, int(corpus.manifest["vocab_size"]), corpus.vocabulary_checksum,
                              self.gene_vocabulary)
        use_trained_lengths(datamodule, self.model.config)
        return datamodule
