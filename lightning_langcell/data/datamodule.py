"""``LangCellDataModule``: one LightningDataModule over tokenized cells, used by every task."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from lightning_langcell.column_codes import used_codes, value_codes
from lightning_langcell.data.collate import CellBatchCollator
from lightning_langcell.data.datasets import CellDataset, EpochTaggedBatches, index_dtype
from lightning_langcell.errors import LangCellInputError

SPLITS = ("train", "val", "test")
#: k-shot runs: the labelled cells not picked for training, split (stratified) into val / test
K_SHOT_REST_SPLIT = (0.0, 0.1, 0.9)
#: cell length when neither the user nor a task set ``max_length`` (the released LangCell's)
DEFAULT_MAX_LENGTH = 2048


def default_cache_dir() -> Path:
    """Corpus cache: ``$LANGCELL_CACHE/corpora`` or ``~/.cache/lightning_langcell/corpora``."""
    from lightning_langcell.data.corpus import cache_root

    return cache_root() / "corpora"


class LangCellDataModule(pl.LightningDataModule):
    """Tokenized cells (from .h5ad files or a corpus directory) with texts, labels and splits.

    Args:
        data: .h5ad path(s), tokenized once in ``prepare_data`` and cached by content, a
            Hugging Face dataset folder of Geneformer token ids (``save_to_disk``; for a
            DatasetDict, its split's subfolder), imported once into the same cache, or a corpus
            directory written by ``python -m lightning_langcell tokenize``.
        cache_dir: where tokenized .h5ad inputs are cached (default :func:`default_cache_dir`).
        label_column: obs column holding class labels (``None``: unlabelled).
        texts: build a text per cell from its metadata (needed by cell–text objectives).
        text_tokenizer: local HF BERT tokenizer directory; ``None`` uses the bundled vocabulary.
        text_max_length: text tokens kept per text.
        type2text: JSON file mapping labels/ontology ids to texts (overrides the ontology).
        max_length: cell tokens fed to the model including ``<cls>``; None: the length the
            checkpoint was trained with (set by the task; 2048 without one).
        batch_size / eval_batch_size: cells per batch (per device).
        batch_tokens: training batches by a budget of real tokens per device (``<cls>`` + genes,
            capped at ``max_length``) instead of ``batch_size`` cells: every step costs about the
            same (:class:`~lightning_langcell.data.sampling.TokenBudgetBatchSampler`); must be
            ≥ ``max_length`` so a full-length cell fits. Epochs then differ by a few batches: train
            with ``reload_dataloaders_every_n_epochs=1`` (warned otherwise) so each runs all of
            its batches. None: ``batch_size`` cells per batch.
        max_cells_per_batch: cap on cells per token-budget batch (bounds the text encoder's
            work); None: ``batch_size``.
        mgm_probability: fraction of gene tokens masked for masked gene modelling in training and
            validation batches: the official 0.15 by default, as pre-training needs; 0 (or null)
            switches masking off (classifiers, zero-shot, embedding).
        split: train/val/test fractions of a seeded split stratified by label.
        split_by / held_out: obs column and values whose cells form the test split instead
            (cross-dataset evaluation), e.g. ``split_by="source_file"``.
        k_shot: k >= 1 training cells per class (few-shot; None: not few-shot); the other labelled
            cells are split into val and test (``K_SHOT_REST_SPLIT``).
        seed: seed of splits, batch order and masks.
        packed: training and validation batches without padding, the cells concatenated in one row
            (``CellBatchCollator(packed=True)``), for pre-training (``LangCellPretraining``).
        pool_size: batches' worth of cells sorted together for length grouping.
        assume_counts: accept an X that does not look like raw counts.
        verify_digests: re-hash the corpus files against their manifest digests when the
            corpus is opened, once per file version (remembered by file stamp under the cache
            root, so other ranks and later runs on an unchanged corpus skip it; one pass over
            the corpus the first time; its cost is measured by
            ``python -m benchmarks.corpus_verify_benchmark``; False skips it: sizes, dtypes,
            offsets and token-id ranges are still checked). A damaged cache entry is
            named in a warning, removed and rebuilt from the .h5ad inputs.
    """

    def __init__(
        self,
        data: str | Sequence[str],
        cache_dir: str | None = None,
        label_column: str | None = "cell_type",
        texts: bool = True,
        text_tokenizer: str | None = None,
        text_max_length: int = 256,
        type2text: str | None = None,
        max_length: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        batch_tokens: int | None = None,
        max_cells_per_batch: int | None = None,
        num_workers: int = 0,
        mgm_probability: float | None = 0.15,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_by: str | None = None,
        held_out: Sequence[str] | None = None,
        k_shot: int | None = None,
        seed: int = 0,
        pool_size: int = 50,
        assume_counts: bool = False,
        verify_digests: bool = True,
        packed: bool = False,
    ):
        super().__init__()
        if k_shot is not None and k_shot < 1:
            raise LangCellInputError(
                f"k_shot {k_shot}: a few-shot run needs at least 1 training cell per class.",
                "Pass data.k_shot >= 1, or data.k_shot null to train on the split fractions instead.",
            )
        _check_token_budget(batch_tokens, max_cells_per_batch, max_length)
        self.save_hyperparameters()
        self.inputs = [str(data)] if isinstance(data, (str, os.PathLike)) else [str(p) for p in data]
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.corpus = None
        self.classes: list[str] = []
        self.splits: dict[str, np.ndarray] = {}
        self.datasets: dict[str, CellDataset] = {}
        self._text_builder = None
        self._text_tokenizer = None
        self._metadata: pd.DataFrame | None = None
        self._train_batches: EpochTaggedBatches | None = None
        self._resume_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------- corpus
    def _is_corpus_dir(self) -> bool:
        return len(self.inputs) == 1 and Path(self.inputs[0]).is_dir() and not self._is_hf_dataset()

    def _is_hf_dataset(self) -> bool:
        from lightning_langcell.data.hf_datasets import is_hf_dataset_dir

        return len(self.inputs) == 1 and is_hf_dataset_dir(self.inputs[0])

    def _tokenizer(self):
        from lightning_langcell.tokenization import CellTokenizer

        return CellTokenizer(assume_counts=self.hparams.assume_counts)

    def corpus_path(self) -> Path:
        """The corpus directory: the given one, or the cache entry for the .h5ad inputs."""
        if self._is_corpus_dir():
            return Path(self.inputs[0])
        if self._is_hf_dataset():
            from lightning_langcell.data.hf_datasets import hf_cache_key

            return self.cache_dir / hf_cache_key(self.inputs[0])
        missing = [p for p in self.inputs if not Path(p).is_file()]
        if missing:
            raise LangCellInputError(
                f"Data file(s) not found: {missing}.",
                "Pass existing .h5ad files or a corpus directory as `data`.",
            )
        from lightning_langcell.data.corpus_writer import corpus_cache_key

        return self.cache_dir / corpus_cache_key(self.inputs, self._tokenizer(), self._obs_columns())

    def _obs_columns(self) -> list[str]:
        """Obs columns the corpus must keep beyond the defaults: the label and split columns."""
        return [c for c in (self.hparams.label_column, self.hparams.split_by) if c]

    def prepare_data(self) -> None:
        """Tokenize the .h5ad inputs once into the content-keyed corpus cache."""
        path = self.corpus_path()
        if self._is_corpus_dir() or path.exists():
            return
        from lightning_langcell.data.corpus_writer import tokenize_to_corpus
        from lightning_langcell.errors import CorpusError

        try:
            if self._is_hf_dataset():
                from lightning_langcell.data.hf_datasets import import_hf_dataset

                import_hf_dataset(self.inputs[0], path)
            else:
                tokenize_to_corpus(self.inputs, path, tokenizer=self._tokenizer(), obs_columns=self._obs_columns())
        except CorpusError:
            if not path.exists():  # another process finished the same cache entry first: use it
                raise

    def _open_corpus(self):
        """Open (and check) the corpus; a damaged cache entry is named, removed and rebuilt once."""
        from lightning_langcell.data.corpus import CellCorpus
        from lightning_langcell.errors import CorpusError

        path = self.corpus_path()
        try:
            return CellCorpus(path, verify_digests=self.hparams.verify_digests)
        except CorpusError as error:
            if self._is_corpus_dir():
                raise  # the user's own corpus: never deleted
            warnings.warn(f"Cached corpus {path} is damaged and is rebuilt from {self.inputs}: {error.problem}",
                          stacklevel=3)
        _remove_cache_entry(path)
        self.prepare_data()
        return CellCorpus(path, verify_digests=self.hparams.verify_digests)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.corpus is not None:
            return
        if not self.corpus_path().exists():
            self.prepare_data()
        self.corpus = self._open_corpus()
        obs = self._metadata = self.corpus.frame(self._setup_columns())
        labels = self._labels(obs)
        text_tokens, text_ids = self._texts(obs) if self.hparams.texts else (None, None)
        self.splits = self._split(obs, labels)
        for name, indices in self.splits.items():
            self.datasets[name] = CellDataset(self.corpus, indices, text_tokens, text_ids, labels)
        self.datasets["predict"] = CellDataset(
            self.corpus, np.arange(len(self.corpus), dtype=index_dtype(len(self.corpus))), text_tokens, text_ids, labels
        )

    def _setup_columns(self) -> list[str]:
        """The corpus columns setup reads: all but ``source_index`` and the per-cell text ones
        (``obs_name``: one Python string per cell), unless the label or split column is one."""
        wanted = set(self._obs_columns())
        return [name for name in self.corpus.columns
                if name in wanted or (name != "source_index" and self.corpus.column_kind(name) != "text")]

    def _labels(self, obs: pd.DataFrame) -> np.ndarray | None:
        column = self.hparams.label_column
        if column is None:
            return None
        if column not in obs.columns:
            raise LangCellInputError(
                f"Label column {column!r} is not in the corpus metadata (columns: {list(obs.columns)}).",
                "Set data.label_column to one of those columns, or to null for unlabelled data.",
            )
        codes, uniques = value_codes(obs[column])  # per distinct value, not per cell
        names = pd.Series(uniques).astype("string")
        known = (names.notna() & (names != "")).to_numpy() & used_codes(codes, len(uniques))
        self.classes = sorted(set(names[known].tolist()))
        lookup = {name: i for i, name in enumerate(self.classes)}
        code_to_class = np.array([lookup[v] if ok else -1 for v, ok in zip(names.fillna(""), known)] + [-1],
                                 dtype=np.int32)
        return code_to_class[codes]  # int32: a missing value's code -1 takes the appended -1

    def _texts(self, obs: pd.DataFrame):
        from lightning_langcell.text import CellTextBuilder, load_text_tokenizer
        from lightning_langcell.text.text_tokenizer import text_length_check

        self._text_builder = CellTextBuilder(type2text=self.hparams.type2text)
        self._text_tokenizer = load_text_tokenizer(self.hparams.text_tokenizer)
        unique_texts, text_ids = self._text_builder.text_ids_for(obs)
        self.unique_texts = list(unique_texts)
        text_length_check(self.unique_texts, self._text_tokenizer, self.hparams.text_max_length)  # warns
        encoded = self._text_tokenizer(
            self.unique_texts, truncation=True, max_length=self.hparams.text_max_length
        )["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in encoded], np.asarray(text_ids)

    def _split(self, obs: pd.DataFrame, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        from lightning_langcell.data.sampling import k_shot_indices, stratified_split

        hp = self.hparams
        pool, test = None, np.array([], dtype=np.int64)  # pool None: every cell (no index array)
        if hp.split_by is not None:
            if hp.split_by not in obs.columns:
                raise LangCellInputError(
                    f"split_by column {hp.split_by!r} is not in the corpus metadata.",
                    f"Use one of {list(obs.columns)}.",
                )
            held = _held_out(obs[hp.split_by], hp.held_out or [])
            if not held.any():
                raise LangCellInputError(
                    f"No cell has {hp.split_by} in {hp.held_out}: the test split would be empty.",
                    f"Pick held_out values among {sorted(obs[hp.split_by].astype(str).unique())}.",
                )
            pool, test = np.flatnonzero(~held), np.flatnonzero(held)
        named = None if labels is None else _named_labels(labels, self.classes)
        if hp.k_shot is not None:
            if labels is None:
                raise LangCellInputError("k_shot needs labels.", "Set data.label_column.")
            # unlabelled cells are neither shots nor test cells
            pool = np.flatnonzero(labels >= 0) if pool is None else pool[labels[pool] >= 0]
            train_local, rest_local = k_shot_indices(named[pool], hp.k_shot, hp.seed)
            train, rest = pool[train_local], pool[rest_local]
            if hp.split_by is None:
                parts = stratified_split(named[rest], K_SHOT_REST_SPLIT, hp.seed)
                return {"train": train, "val": rest[parts["val"]], "test": rest[parts["test"]]}
            return {"train": train, "val": rest, "test": test}
        fractions = tuple(hp.split)
        if hp.split_by is not None:
            fractions = (fractions[0], fractions[1] + fractions[2], 0.0)
        pool_labels = named if pool is None or named is None else named[pool]
        parts = stratified_split(pool_labels, fractions, hp.seed, n_cells=len(obs) if pool is None else len(pool))
        out = {name: parts[name] if pool is None else pool[parts[name]] for name in SPLITS if name in parts}
        if hp.split_by is not None:
            out["test"] = test
        return out

    # ------------------------------------------------------------ dataloaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def collator(self, masked: bool, packed: bool = False) -> CellBatchCollator:
        pad = 0 if self._text_tokenizer is None else (self._text_tokenizer.pad_token_id or 0)
        return CellBatchCollator(
            max_length=self.hparams.max_length or DEFAULT_MAX_LENGTH,
            mgm_probability=(self.hparams.mgm_probability or 0.0) if masked else 0.0,
            seed=self.hparams.seed,
            text_pad_id=pad,
            packed=packed,
        )

    def batch_fields(self) -> set[str]:
        """The fields of a training batch (what pre-training objectives can rely on), known before
        any data is read."""
        return self.collator(masked=True, packed=self.hparams.packed).batch_fields(
            labels=self.hparams.label_column is not None, texts=self.hparams.texts
        )

    def _grouped_batches(self, name: str, shuffle: bool) -> EpochTaggedBatches:
        """Length-grouped batches; each rank a disjoint shard with the same number of batches."""
        from lightning_langcell.data.sampling import LengthGroupedBatchSampler

        replicas, rank = self._world()
        return EpochTaggedBatches(
            LengthGroupedBatchSampler(
                self.datasets[name].lengths,
                self.hparams.batch_size if name == "train" else self.hparams.eval_batch_size or self.hparams.batch_size,
                seed=self.hparams.seed,
                pool_size=self.hparams.pool_size,
                num_replicas=replicas,
                rank=rank,
                shuffle=shuffle,
            )
        )

    def _token_budget_batches(self) -> EpochTaggedBatches:
        """Training batches by token budget, built at the trainer's epoch (so ``len`` is that epoch's)."""
        from lightning_langcell.data.sampling import TokenBudgetBatchSampler

        hp = self.hparams
        max_length = hp.max_length or DEFAULT_MAX_LENGTH
        _check_token_budget(hp.batch_tokens, hp.max_cells_per_batch, max_length)  # a task may set max_length
        replicas, rank = self._world()
        batches = EpochTaggedBatches(
            TokenBudgetBatchSampler(
                self.datasets["train"].lengths,
                hp.batch_tokens,
                hp.max_cells_per_batch or hp.batch_size,
                max_length=max_length,
                seed=hp.seed,
                pool_size=hp.pool_size,
                num_replicas=replicas,
                rank=rank,
            )
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            warnings.warn(
                "data.batch_tokens: epochs differ by a few batches and Lightning counts them only when it "
                "loads the train loader, so a longer epoch would be cut short. "
                "Set trainer.reload_dataloaders_every_n_epochs: 1.",
                stacklevel=2,
            )
        batches.set_epoch(trainer.current_epoch if trainer is not None else 0)
        return batches

    def train_dataloader(self) -> DataLoader:
        """Seeded length-grouped batches (or token-budget ones), resumable mid-epoch (see :meth:`state_dict`)."""
        if self.hparams.batch_tokens is None:
            sampler = self._grouped_batches("train", shuffle=True)
        else:
            sampler = self._token_budget_batches()
        if self._resume_state is not None:
            sampler.load_state_dict(self._resume_state)
            # a load before Lightning restores its loops (trainer.estimated_stepping_batches, epoch 0)
            # keeps the state for the resumed epoch's own load (reload_dataloaders_every_n_epochs)
            trainer = getattr(self, "trainer", None)
            if trainer is None or trainer.current_epoch >= self._resume_state["epoch"]:
                self._resume_state = None
        self._train_batches = sampler
        return DataLoader(
            self.datasets["train"],
            batch_sampler=sampler,
            collate_fn=self.collator(masked=True, packed=self.hparams.packed),
            num_workers=self.hparams.num_workers,
        )

    def _eval_loader(self, name: str) -> DataLoader:
        """Every cell exactly once across ranks (no padding duplicates), longest first."""
        from lightning_langcell.data.sampling import DistributedEvalSampler

        dataset = self.datasets[name]
        replicas, rank = self._world()
        return DataLoader(
            dataset,
            sampler=DistributedEvalSampler(len(dataset), replicas, rank, lengths=dataset.lengths),
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            collate_fn=self.collator(masked=name != "predict"),
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """Equal batch counts on every rank (a few cells may repeat under DDP): validation losses
        gather across ranks, so a rank with one batch more would wait for the others forever."""
        if len(self.datasets["val"]) == 0:
            return self._eval_loader("val")  # no validation split (e.g. the official 2:1 split)
        return DataLoader(
            self.datasets["val"],
            batch_sampler=self._grouped_batches("val", shuffle=False),
            collate_fn=self.collator(masked=True, packed=self.hparams.packed),
            num_workers=self.hparams.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    # ----------------------------------------------------------------- texts
    def class_texts(self) -> list[str]:
        """The zero-shot text of each class (``"cell type: X. definition; "``), in class order."""
        from lightning_langcell.text import CellTextBuilder

        builder = self._text_builder or CellTextBuilder(type2text=self.hparams.type2text)
        obs = self._metadata if self._metadata is not None else self.corpus.obs
        id_column = f"{self.hparams.label_column}_ontology_term_id"
        texts = []
        for name in self.classes:
            row: dict[str, Any] = {"cell_type": name}
            if id_column in obs.columns:
                ids = obs.loc[obs[self.hparams.label_column].astype(str) == name, id_column]
                ids = ids[ids.astype(str) != ""]
                if len(ids):
                    row["cell_type_ontology_term_id"] = str(ids.iloc[0])
            texts.append(builder.cell_text(row))
        return texts

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the class order and where the training batches stand."""
        state: dict[str, Any] = {"classes": list(self.classes)}
        trainer = getattr(self, "trainer", None)
        if self._train_batches is not None and trainer is not None:
            inner = self._train_batches.batch_sampler.state_dict()
            progress = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            state["train_batches"] = {
                "epoch": trainer.current_epoch,
                "sampler": {**inner, "epoch": trainer.current_epoch, "batches_consumed": progress},
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume mid-epoch: the next ``train_dataloader`` skips the batches already consumed."""
        self._resume_state = state.get("train_batches")


def _held_out(values: pd.Series, held_out: Sequence) -> np.ndarray:
    """Bool [N]: cells whose value, as text, is among ``held_out`` (compared per distinct value)."""
    codes, uniques = value_codes(values)
    wanted = [str(v) for v in held_out]
    held = pd.Index(uniques).astype(str).isin(wanted)
    return np.append(held, "nan" in wanted)[codes]  # a missing value reads "nan", as astype(str) has it


def _named_labels(labels: np.ndarray, classes: list[str]) -> pd.Categorical:
    """Class indices (-1: unlabelled) as a Categorical of class names, unlabelled cells in an
    ``<unlabelled>`` class of their own (so the split is stratified over them too)."""
    unlabelled = classes.index("<unlabelled>") if "<unlabelled>" in classes else len(classes)
    names = classes + ["<unlabelled>"] if unlabelled == len(classes) else classes
    return pd.Categorical.from_codes(np.where(labels >= 0, labels, unlabelled), names)


def _check_token_budget(batch_tokens: int | None, max_cells: int | None, max_length: int | None) -> None:
    """Positive integers, and a budget that fits one cell of ``max_length`` tokens."""
    for name, value in (("batch_tokens", batch_tokens), ("max_cells_per_batch", max_cells)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LangCellInputError(
                f"data.{name} must be a positive integer or null, got {value!r}.",
                f"Pass e.g. data.{name}: {24576 if name == 'batch_tokens' else 48}, or null.",
            )
    if batch_tokens is not None and max_length is not None and batch_tokens < max_length:
        raise LangCellInputError(
            f"data.batch_tokens={batch_tokens} is smaller than one full cell (max_length={max_length} tokens).",
            f"Pass data.batch_tokens >= {max_length} (e.g. {12 * max_length}, the tokens of 12 full cells).",
        )


def _remove_cache_entry(path: Path) -> None:
    """Move a cache entry aside (one atomic rename, so no reader sees half of it), then delete it."""
    aside = path.with_name(f".{path.name}.damaged-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process removed it first
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
