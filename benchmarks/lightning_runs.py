"""In-process Lightning fits of the quality suite: given training / test cells, a lean Trainer.

The quality suite trains many small models (few-shot LangCell for every dataset, k and seed;
LangCell-CE fine-tuning; a reverse pre-training). Starting a CLI subprocess per run costs
seconds of imports and writes checkpoints and logs; here instead:

- :func:`tokenize_once` tokenizes a dataset's AnnData into a corpus directory once (the
  package's content-keyed corpus cache); every run of that dataset reads the same corpus;
- :class:`SubsetDataModule` is the package's ``LangCellDataModule`` whose train and test
  splits are explicit corpus positions (no validation split) and whose ``predict`` split is
  the test cells;
- :func:`fit_predict` fits a task with a Trainer that writes nothing (no logger, no
  checkpoint, no progress bar) and returns the predicted class index of each test cell.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lightning_langcell.data.datamodule import LangCellDataModule

QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


def task_from_checkpoint(task_class: type, checkpoint: str | Path, **hparams: Any):
    """``task_class`` starting from ``checkpoint``: the one place the suite names that parameter."""
    return task_class(init_from=str(checkpoint), **hparams)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's info logs and warnings (GPU available, few workers, seeds ...)."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class SubsetDataModule(LangCellDataModule):
    """``LangCellDataModule`` with given train and test cells (corpus positions) and no val split.

    ``predict`` runs on the test cells (so ``Trainer.predict`` returns their predictions
    without writing result files). Every other argument is ``LangCellDataModule``'s.
    """

    def __init__(self, data: str, train_cells: np.ndarray, test_cells: np.ndarray, **kwargs: Any):
        # ``split`` is unused here; (1, 0, 0) tells the tasks' class-size check that no stratified
        # train/test split is drawn (a class of 1 cell is fine when the splits are given). Classifiers
        # train on unmasked cells: masking (on by default, for pre-training) is off.
        super().__init__(data, **{"split": (1.0, 0.0, 0.0), "mgm_probability": 0.0, **kwargs})
        self.train_cells = np.sort(np.asarray(train_cells, dtype=np.int64))
        self.test_cells = np.sort(np.asarray(test_cells, dtype=np.int64))

    def _split(self, obs, labels) -> dict[str, np.ndarray]:
        if np.intersect1d(self.train_cells, self.test_cells).size:
            raise ValueError("training and test cells overlap")
        return {"train": self.train_cells, "val": np.zeros(0, dtype=np.int64), "test": self.test_cells}

    def predict_dataloader(self):
        return self._eval_loader("test")


def tokenize_once(adata, folder: Path, name: str, label_column: str) -> str:
    """Write ``adata`` to ``folder/<name>.h5ad``, tokenize it into a corpus; returns the corpus path.

    Corpus position i is ``adata`` row i (no cell is dropped: ``keep_empty`` is the default).
    """
    path = folder / f"{name}.h5ad"
    adata.write_h5ad(path)
    module = LangCellDataModule(str(path), cache_dir=str(folder / "corpora"), label_column=label_column, texts=False)
    module.prepare_data()
    corpus = module.corpus_path()
    from lightning_langcell.data.corpus import CellCorpus

    if len(CellCorpus(corpus)) != adata.n_obs:
        raise RuntimeError(f"corpus of {name} has {len(CellCorpus(corpus))} cells, the AnnData {adata.n_obs}")
    return str(corpus)


def lean_trainer(max_epochs: int, root: Path, **extra: Any):
    """A CPU Trainer that logs, checkpoints and validates nothing (``root``: its scratch folder)."""
    import lightning.pytorch as pl

    settings = dict(accelerator="cpu", devices=1, precision="32-true", max_epochs=max_epochs, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
                    default_root_dir=str(root))
    return pl.Trainer(**{**settings, **extra})


def fit_predict(task, datamodule: SubsetDataModule, max_epochs: int, root: Path, seed: int,
                **trainer_settings: Any) -> tuple[np.ndarray, int]:
    """Seed, fit ``task`` on the train cells, predict the test cells.

    Returns (predicted class index [n_test] in ``datamodule.test_cells`` order, optimizer steps).
    """
    import lightning.pytorch as pl
    import torch

    with quiet():
        pl.seed_everything(seed, verbose=False)
        trainer = lean_trainer(max_epochs, root, **trainer_settings)
        trainer.fit(task, datamodule=datamodule)
        batches = trainer.predict(task, datamodule=datamodule)
    index = torch.cat([batch["index"] for batch in batches]).numpy()
    predicted = torch.cat([batch["prediction"] for batch in batches]).numpy()
    order = np.argsort(index)
    if not np.array_equal(index[order], datamodule.test_cells):
        raise RuntimeError("the predicted cells are not the test cells")
    return predicted[order], int(trainer.global_step)


def distinct_class_texts(module: LangCellDataModule) -> dict[str, str]:
    """``type2text`` overrides that give classes sharing one CL term distinct class texts.

    Few-shot LangCell refuses identical class texts (e.g. zeisel's Astrocyte1 / Astrocyte2 both
    CL:0012000); each such class gets the definition ``"<dataset label>. <CL definition>"``, so
    its text reads ``"cell type: <CL label>. <dataset label>. <CL definition>; "``. ``module``:
    a set-up data module of the dataset.
    """
    from collections import defaultdict

    from lightning_langcell.text.ontology import Ontology

    by_text: dict[str, list[str]] = defaultdict(list)
    for name, text in zip(module.classes, module.class_texts()):
        by_text[text].append(name)
    obs, column = module.corpus.obs, module.hparams.label_column
    id_column = f"{column}_ontology_term_id"
    ontology, overrides = Ontology.bundled(), {}
    for names in by_text.values():
        for name in names if len(names) > 1 else ():
            ids = obs.loc[obs[column].astype(str) == name, id_column].astype(str) if id_column in obs else []
            term = ontology.term(ids.iloc[0]) if len(ids) else None
            overrides[name] = f"{name}. {term.definition}" if term is not None and term.definition else name
    return overrides
