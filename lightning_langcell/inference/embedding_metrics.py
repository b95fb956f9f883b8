"""How well cell embeddings separate cell types and mix batches (numpy + torch; cosine geometry).

- :func:`silhouette`: the average silhouette width (ASW) with cosine distance ``1 - cos``, as
  ``sklearn.metrics.silhouette_score(X, labels, metric="cosine")``, on at most ``max_cells``
  cells drawn without replacement (seeded) so its O(n²) cost stays bounded. In [-1, 1].
  Undefined (NaN, no error) with fewer than 2 or as many labels as cells.
- :func:`silhouette_label`: scib's ``silhouette`` (label ASW rescaled): (ASW + 1) / 2, in [0, 1],
  1 = well-separated cell types.
- :func:`silhouette_batch`: scib's ``silhouette_batch``: within each cell-type label, the
  silhouette of every cell by batch, scored 1 - |s| (1 = batches mixed, 0 = separated); the
  mean per label, then the mean over labels. Labels whose cells come from one batch only (or
  from as many batches as cells) are skipped, as in scib. Without labels, all cells form one
  label. Cosine distance here (scib defaults to Euclidean on the embedding).
- :func:`knn_purity`: mean over query cells of the fraction of their k nearest neighbours
  (cosine, the cell itself excluded) that share their label (1 = perfectly pure).
- :func:`knn_batch_mixing`: mean fraction of the k nearest neighbours that come from another
  batch (0 = batches do not mix; with B equal batches, perfect mixing gives (B-1)/B).

Cells whose label is missing (None, NaN, <NA>) are left out. The neighbours are searched among
all (kept) cells; when there are more than ``max_cells`` cells only ``max_cells`` query cells
(seeded draw) are averaged, an unbiased estimate of the full mean.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_langcell.errors import LangCellInputError

DEFAULT_MAX_CELLS = 5000
DEFAULT_NEIGHBORS = 15
_CHUNK_ELEMENTS = 1 << 24  # pairwise values per row chunk (128 MB in float64)


def _rows_per_chunk(n: int) -> int:
    return max(1, min(1024, _CHUNK_ELEMENTS // max(n, 1)))


def _normalised(embeddings: Any, dtype: type = np.float64) -> np.ndarray:
    x = np.asarray(embeddings, dtype=dtype)
    if x.ndim != 2:
        raise LangCellInputError(f"Embeddings must be a 2-d array [cells, dims], got shape {x.shape}.",
                                 "Pass one embedding row per cell.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _codes(labels: Any, n_cells: int) -> np.ndarray:
    """Integer code per cell (-1: missing label)."""
    values = pd.Series(np.asarray(labels, dtype=object)).astype("string")
    if len(values) != n_cells:
        raise LangCellInputError(f"{len(values)} labels for {n_cells} cells.", "Give one label per cell.")
    codes, _ = pd.factorize(values)
    return codes.astype(np.int64)


def _labelled(embeddings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised embeddings, label codes) of the cells with a label and a finite embedding, and
    that selection as a bool mask [N]."""
    x = _normalised(embeddings)
    codes = _codes(labels, x.shape[0])
    keep = (codes >= 0) & np.isfinite(x).all(axis=1)
    return x[keep], codes[keep], keep


def _draw(n: int, max_cells: int | None, seed: int) -> np.ndarray:
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    if max_cells < 1:
        raise LangCellInputError(f"max_cells must be positive, got {max_cells}.", "Use e.g. max_cells=5000.")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_cells, replace=False))


def _silhouette_samples(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-cell cosine silhouette [n] of integer ``codes`` 0..L-1 on unit rows ``x`` (singletons: 0)."""
    n, n_labels = len(codes), int(codes.max()) + 1
    onehot = np.zeros((n, n_labels))
    onehot[np.arange(n), codes] = 1.0
    sizes = onehot.sum(axis=0)
    scores = np.empty(n)
    step = _rows_per_chunk(n)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        distance = np.clip(1.0 - x[rows] @ x.T, 0.0, 2.0)
        distance[np.arange(distance.shape[0]), np.arange(start, start + distance.shape[0])] = 0.0
        sums = distance @ onehot  # [c, L]: summed distance to each cluster
        own = codes[rows]
        own_size = sizes[own]
        a = sums[np.arange(len(own)), own] / np.maximum(own_size - 1, 1)
        means = sums / np.maximum(sizes, 1)
        means[:, sizes == 0] = np.inf
        means[np.arange(len(own)), own] = np.inf
        b = means.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (b - a) / np.maximum(a, b)
        scores[rows] = np.where(own_size > 1, np.nan_to_num(s), 0.0)  # singletons score 0
    return scores


def _drawn(embeddings: Any, labels: Any, max_cells: int | None, seed: int,
           batches: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(unit rows, label codes 0..L-1, batch codes or None) of at most ``max_cells`` labelled cells."""
    x, codes, kept = _labelled(embeddings, labels)
    batch_codes = None
    if batches is not None:
        batch_codes = _codes(batches, len(kept))[kept]
        x, codes = x[batch_codes >= 0], codes[batch_codes >= 0]
        batch_codes = batch_codes[batch_codes >= 0]
    chosen = _draw(len(codes), max_cells, seed)
    codes = pd.factorize(codes[chosen])[0]
    return x[chosen], codes, None if batch_codes is None else batch_codes[chosen]


def silhouette(embeddings: Any, labels: Any, max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0) -> float:
    """Cosine ASW of ``labels`` [N] on ``embeddings`` [N, E], in [-1, 1] (NaN when undefined)."""
    x, codes, _ = _drawn(embeddings, labels, max_cells, seed)
    n_labels = int(codes.max()) + 1 if len(codes) else 0
    if not 2 <= n_labels <= len(codes) - 1:
        return float("nan")
    return float(_silhouette_samples(x, codes).mean())


def silhouette_label(embeddings: Any, labels: Any, max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0) -> float:
    """scib's label silhouette: (cosine ASW of ``labels`` + 1) / 2, in [0, 1] (NaN when undefined)."""
    return (silhouette(embeddings, labels, max_cells, seed) + 1.0) / 2.0


def silhouette_batch(embeddings: Any, batches: Any, labels: Any = None, max_cells: int | None = DEFAULT_MAX_CELLS,
                     seed: int = 0) -> float:
    """scib's batch silhouette: mean over labels of the mean 1 - |cosine silhouette by batch| of the
    label's cells, in [0, 1] (1 = mixed). ``labels`` None: one label. NaN when no label qualifies."""
    labels = np.zeros(len(np.asarray(batches, dtype=object)), dtype=np.int64) if labels is None else labels
    x, codes, batch_codes = _drawn(embeddings, labels, max_cells, seed, batches=batches)
    per_label = []
    for label in np.unique(codes):
        members = codes == label
        within = pd.factorize(batch_codes[members])[0]
        n_batches = int(within.max()) + 1
        if n_batches == 1 or n_batches == len(within):
            continue
        per_label.append(float((1.0 - np.abs(_silhouette_samples(x[members], within))).mean()))
    return float(np.mean(per_label)) if per_label else float("nan")


def nearest_neighbours(embeddings: Any, k: int = DEFAULT_NEIGHBORS, queries: np.ndarray | None = None) -> np.ndarray:
    """Indices [Q, k] of the k most cosine-similar cells of each query row (itself excluded).

    ``queries``: row indices (default all); k is capped at N - 1. Exact search in row chunks.
    """
    x = _normalised(embeddings, np.float32)
    queries = np.arange(len(x)) if queries is None else np.asarray(queries, dtype=np.int64)
    k = min(int(k), len(x) - 1)
    if k < 1:
        raise LangCellInputError(f"Nearest neighbours need k >= 1 and at least 2 cells (got k={k}, {len(x)} cells).",
                                 "Use more cells, or k >= 1.")
    cells = torch.from_numpy(x)
    out = np.empty((len(queries), k), dtype=np.int64)
    step = _rows_per_chunk(len(x))
    for start in range(0, len(queries), step):
        rows = torch.from_numpy(queries[start:start + step])
        sim = cells[rows] @ cells.T
        sim[torch.arange(len(rows)), rows] = -torch.inf
        out[start:start + len(rows)] = sim.topk(k, dim=1).indices.numpy()
    return out


def _neighbour_agreement(embeddings: Any, labels: Any, k: int, max_cells: int | None, seed: int,
                         cache: dict | None = None) -> np.ndarray:
    """bool [Q, k]: does each neighbour share the query cell's label (labelled cells only).

    ``cache``: neighbours already searched, keyed by the set of labelled cells (shared between
    the label and batch scores of :func:`embedding_scores`)."""
    x, codes, kept = _labelled(embeddings, labels)
    key = (hashlib.sha1(np.packbits(kept).tobytes()).hexdigest(), k, max_cells, seed)
    if cache is not None and key in cache:
        queries, neighbours = cache[key]
    else:
        queries = _draw(len(codes), max_cells, seed)
        neighbours = nearest_neighbours(x, k, queries)
        if cache is not None:
            cache[key] = (queries, neighbours)
    return codes[neighbours] == codes[queries][:, None]


def knn_purity(embeddings: Any, labels: Any, k: int = DEFAULT_NEIGHBORS,
               max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0) -> float:
    """Mean fraction of each cell's k nearest neighbours (cosine, itself excluded) with its label."""
    return float(_neighbour_agreement(embeddings, labels, k, max_cells, seed).mean())


def knn_batch_mixing(embeddings: Any, batches: Any, k: int = DEFAULT_NEIGHBORS,
                     max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0) -> float:
    """Mean fraction of each cell's k nearest neighbours (cosine, itself excluded) from another batch."""
    return float(1.0 - _neighbour_agreement(embeddings, batches, k, max_cells, seed).mean())


def embedding_scores(embeddings: Any, labels: Any = None, batches: Any = None, k: int = DEFAULT_NEIGHBORS,
                     max_cells: int | None = DEFAULT_MAX_CELLS, seed: int = 0) -> dict[str, float]:
    """``silhouette_label`` + ``knn_purity`` (with labels), ``silhouette_batch`` + ``knn_batch_mixing``
    (with batches; the batch silhouette per label when labels are given too), each on the cells
    whose label / batch is known."""
    scores: dict[str, float] = {}
    cache: dict = {}
    if labels is not None:
        scores["silhouette_label"] = silhouette_label(embeddings, labels, max_cells, seed)
        scores["knn_purity"] = float(_neighbour_agreement(embeddings, labels, k, max_cells, seed, cache).mean())
    if batches is not None:
        scores["silhouette_batch"] = silhouette_batch(embeddings, batches, labels, max_cells, seed)
        agreement = _neighbour_agreement(embeddings, batches, k, max_cells, seed, cache)
        scores["knn_batch_mixing"] = float(1.0 - agreement.mean())
    return scores
