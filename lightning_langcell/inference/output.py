"""Task results in AnnData (zero-shot annotations, cell embeddings): what is stored where, and
crash-safe .h5ad output.

- ``obs["langcell_prediction"]``: predicted class (categorical over the candidate classes;
  missing for cells that were not scored, e.g. ``filter_pass == 0``);
- ``obs["langcell_confidence"]``: final probability of the predicted class;
- ``obs["langcell_unknown_score"]``: the unknown score of :mod:`lightning_langcell.inference.open_set`
  (default kind :data:`~lightning_langcell.inference.open_set.DEFAULT_UNKNOWN_SCORE`; high: the cell
  fits no candidate well) and, with an ``unknown_threshold``, ``obs["langcell_unknown"]`` (bool:
  score above the threshold; False for cells not scored);
- with the hierarchy option (:mod:`lightning_langcell.inference.hierarchy`):
  ``obs["langcell_term_id"]`` / ``obs["langcell_term_label"]``, the Cell Ontology term predicted
  after back-off, and ``obs["langcell_backoff_level"]`` (0: the predicted class itself, 1: its
  parent, ...; -1: cell not scored);
- ``obsm["langcell_probabilities"]`` [N, C] float32: final probabilities, columns in the order of
  ``uns["langcell_classes"]``;
- ``obsm["X_langcell"]`` [N, E] float32: the L2-normalised LangCell cell embeddings;
- ``uns["langcell"]``: settings (alpha, top_k, temperature, class texts, ...) and ``metrics``.

:class:`CellEmbeddings` (the embedding task) stores only ``obsm["X_langcell"]`` and ``uns["langcell"]``.

Outputs are always new files, written beside the target and renamed into place
(:func:`lightning_langcell.io_utils.atomic_file`); the input is never modified.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.open_set import DEFAULT_UNKNOWN_SCORE, unknown_score
from lightning_langcell.io_utils import atomic_file

PREDICTION_KEY = "langcell_prediction"
CONFIDENCE_KEY = "langcell_confidence"
PROBABILITIES_KEY = "langcell_probabilities"
CLASSES_KEY = "langcell_classes"
TERM_ID_KEY = "langcell_term_id"
TERM_LABEL_KEY = "langcell_term_label"
BACKOFF_LEVEL_KEY = "langcell_backoff_level"
UNKNOWN_SCORE_KEY = "langcell_unknown_score"
UNKNOWN_KEY = "langcell_unknown"
EMBEDDING_KEY = "X_langcell"
INFO_KEY = "langcell"


class CellResults:
    """Per-cell results for all N rows of an AnnData: its obs columns, obsm and uns entries.

    Subclasses hold ``embeddings`` [N, E] (NaN rows: cell not scored) and ``info`` (→ ``uns["langcell"]``).
    """

    embeddings: np.ndarray
    info: dict[str, Any]

    def obs_columns(self, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(index=index)

    def obsm_entries(self) -> dict[str, np.ndarray]:
        return {EMBEDDING_KEY: self.embeddings}

    def uns_entries(self) -> dict[str, Any]:
        return {INFO_KEY: _storable(self.info)}

    def add_to(self, adata) -> None:
        """Store the results in ``adata`` (in place: call it on a copy)."""
        if adata.n_obs != len(self.embeddings):
            raise LangCellInputError(f"{len(self.embeddings)} results for {adata.n_obs} cells.",
                                     "Annotate the AnnData the results were computed on.")
        columns = self.obs_columns(adata.obs_names)
        for name in columns:
            adata.obs[name] = columns[name]
        adata.obsm.update(self.obsm_entries())
        adata.uns.update(self.uns_entries())


@dataclass
class CellEmbeddings(CellResults):
    """L2-normalised cell ``embeddings`` [N, E] float32 (NaN rows: cell not embedded) and ``info``."""

    embeddings: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, n_cells: int, embed_dim: int) -> "CellEmbeddings":
        return cls(np.full((n_cells, embed_dim), np.float32("nan"), np.float32))

    def set_rows(self, rows: np.ndarray, embeddings: np.ndarray) -> None:
        self.embeddings[rows] = embeddings


@dataclass
class ZeroShotAnnotations(CellResults):
    """Per-cell results for all N rows of an AnnData (NaN rows: cell not scored).

    ``probabilities`` [N, C] and ``embeddings`` [N, E] float32; ``info`` goes to ``uns["langcell"]``;
    ``extra_obs``: further obs columns [N] (e.g. the hierarchy's back-off predictions);
    ``extra_obsm``: further obsm entries [N, ...] (e.g. the few-shot adapter's scores).
    ``unknown_threshold``: cells whose unknown score is above it are marked ``langcell_unknown``
    (None: no such column).
    """

    classes: list[str]
    probabilities: np.ndarray
    embeddings: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    extra_obs: dict[str, np.ndarray] = field(default_factory=dict)
    extra_obsm: dict[str, np.ndarray] = field(default_factory=dict)
    unknown_threshold: float | None = None

    @classmethod
    def empty(cls, n_cells: int, classes: list[str], embed_dim: int) -> "ZeroShotAnnotations":
        """All rows NaN; fill the scored rows with :meth:`set_rows`."""
        nan = np.float32("nan")
        return cls(list(classes), np.full((n_cells, len(classes)), nan, np.float32),
                   np.full((n_cells, embed_dim), nan, np.float32))

    def set_rows(self, rows: np.ndarray, probabilities: np.ndarray, embeddings: np.ndarray) -> None:
        self.probabilities[rows] = probabilities
        self.embeddings[rows] = embeddings

    @property
    def scored(self) -> np.ndarray:
        """bool [N]: rows with a prediction."""
        return ~np.isnan(self.probabilities).any(axis=1)

    @property
    def prediction_codes(self) -> np.ndarray:
        """int64 [N] class index of each row's prediction (-1 when not scored)."""
        codes = np.where(self.scored, np.nan_to_num(self.probabilities, nan=-1.0).argmax(axis=1), -1)
        return codes.astype(np.int64)

    def obs_columns(self, index: pd.Index) -> pd.DataFrame:
        codes = self.prediction_codes
        prediction = pd.Categorical.from_codes(codes, categories=pd.Index(self.classes, dtype=object))
        confidence = np.full(len(codes), np.nan, dtype=np.float32)
        confidence[codes >= 0] = self.probabilities[codes >= 0, codes[codes >= 0]]
        unknown = unknown_score(self.probabilities, DEFAULT_UNKNOWN_SCORE)
        flags = {} if self.unknown_threshold is None else {UNKNOWN_KEY: unknown > self.unknown_threshold}  # NaN: False
        return pd.DataFrame({PREDICTION_KEY: prediction, CONFIDENCE_KEY: confidence,
                             UNKNOWN_SCORE_KEY: unknown.astype(np.float32), **flags, **self.extra_obs}, index=index)

    def obsm_entries(self) -> dict[str, np.ndarray]:
        return {PROBABILITIES_KEY: self.probabilities, EMBEDDING_KEY: self.embeddings, **self.extra_obsm}

    def uns_entries(self) -> dict[str, Any]:
        return {CLASSES_KEY: np.asarray(self.classes, dtype=object), **super().uns_entries()}


def _storable(value: Any) -> Any:
    """Make nested settings writable to .h5ad: None → "none", tuples → lists, numpy scalars → Python."""
    if isinstance(value, Mapping):
        return {str(k): _storable(v) for k, v in value.items()}
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        items = [_storable(v) for v in value]
        return np.asarray(items, dtype=object if any(isinstance(v, str) for v in items) else None)
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_output_path(target: str | os.PathLike, overwrite: bool, source: str | os.PathLike | None = None) -> Path:
    """Refuse writing over the input, or over an existing file without ``overwrite``."""
    target = Path(target)
    if target.suffix != ".h5ad":
        raise LangCellInputError(f"Output {target} does not end in .h5ad.", "Name the output file <name>.h5ad.")
    if source is not None and target.exists() and os.path.samefile(target, source):
        raise LangCellInputError(f"Output {target} is the input file; the input is never modified.",
                                 "Write the annotated copy to a new path.")
    if target.exists() and not overwrite:
        raise LangCellInputError(f"Output {target} exists.",
                                 "Choose a new path, or pass overwrite=True (CLI: --model.init_args.overwrite true).")
    return target


def h5ad_n_obs(path: str | os.PathLike) -> int:
    """Number of cells of an .h5ad file (reads only the obs index length)."""
    import h5py

    with h5py.File(path, "r") as store:
        obs = store["obs"]
        return int(obs[obs.attrs.get("_index", "_index")].shape[0])


def write_h5ad(adata, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an in-memory AnnData to ``target`` atomically (temporary file, then rename)."""
    import anndata
    import h5py

    target = check_output_path(target, overwrite)
    adata.strings_to_categoricals()
    with atomic_file(target, "w+b") as handle, h5py.File(handle, "w") as store:
        anndata.io.write_elem(store, "/", adata)
    return target


def write_annotated_copy(source: str | os.PathLike, target: str | os.PathLike,
                         annotations: CellResults, overwrite: bool = False) -> Path:
    """Copy the .h5ad ``source`` to ``target`` with the results added, without loading ``X``.

    The bytes are copied into a temporary file beside ``target``; obs, obsm and uns are then
    updated there and the file is renamed into place.
    """
    import anndata
    import h5py

    target = check_output_path(target, overwrite, source)
    with atomic_file(target, "w+b") as handle:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle, 16 << 20)
        handle.seek(0)
        with h5py.File(handle, "r+") as store:
            obs = anndata.io.read_elem(store["obs"])
            if len(obs) != len(annotations.embeddings):
                raise LangCellInputError(f"{len(annotations.embeddings)} results for {len(obs)} cells of {source}.",
                                         "Write the results next to the file they were computed on.")
            columns = annotations.obs_columns(obs.index)
            for name in columns:
                obs[name] = columns[name]
            del store["obs"]
            anndata.io.write_elem(store, "obs", obs)
            for group, entries in (("obsm", annotations.obsm_entries()), ("uns", annotations.uns_entries())):
                if group not in store:
                    anndata.io.write_elem(store, group, {})
                for key, value in entries.items():
                    if key in store[group]:
                        del store[group][key]
                    anndata.io.write_elem(store[group], key, value)
    return target
