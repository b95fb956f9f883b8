"""Batch samplers for cells of very different lengths (200–2048 genes), single-device or DDP.

* :class:`LengthGroupedBatchSampler` (training): seeded per (seed, epoch), groups cells of similar
  length into the same batch to cut padding, gives every DDP rank a disjoint set of batches and
  the same number of batches, and resumes mid-epoch exactly (``state_dict``/``load_state_dict``).
* :class:`TokenBudgetBatchSampler` (training): the same, but each batch holds as many cells as
  fit a budget of real tokens (capped in cells), so every step costs about the same.
* :class:`DistributedEvalSampler` (validation/test/predict): one shard of the cells per rank,
  without the duplicates ``DistributedSampler`` pads with, so each cell is evaluated once.
* :func:`padding_efficiency`: real tokens / padded tokens of a list of batches.

Lightning notes (this module does not import Lightning):

* Train with ``Trainer(use_distributed_sampler=False)`` and pass ``num_replicas=trainer.world_size``,
  ``rank=trainer.global_rank`` (or leave them None: read from ``torch.distributed`` when
  initialised). With ``use_distributed_sampler=True`` on several devices Lightning tries to
  rebuild a custom batch sampler around a ``DistributedSampler`` and raises a ``TypeError``
  asking for exactly that flag. The sampler deliberately exposes no ``batch_size``/``drop_last``
  attributes, which Lightning would use to rebuild it wrongly (``cls(sampler, batch_size=..)``).
* Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` each epoch; the
  ``sampler`` property returns the batch sampler itself so that call reaches it.
* :class:`TokenBudgetBatchSampler`'s epochs differ by a few batches, and Lightning takes ``len``
  only when it loads the train loader: use ``Trainer(reload_dataloaders_every_n_epochs=1)`` and
  build the sampler at ``trainer.current_epoch``, or a longer epoch is cut at the first's count.
* For val/test, ``use_distributed_sampler=True`` makes Lightning insert a ``DistributedSampler``
  that repeats up to ``world_size - 1`` cells (metrics slightly off; Lightning warns); for
  predict it inserts ``UnrepeatedDistributedSamplerWrapper`` (no repeats, strided shards).
  :class:`DistributedEvalSampler` subclasses ``DistributedSampler`` so Lightning keeps it as is
  in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from lightning_langcell.data.splits import k_shot_indices, split_by_group, stratified_split
from lightning_langcell.errors import LangCellInputError

__all__ = [
    "DistributedEvalSampler",
    "LengthGroupedBatchSampler",
    "TokenBudgetBatchSampler",
    "budget_bounds",
    "k_shot_indices",
    "padding_efficiency",
    "split_by_group",
    "stratified_split",
]

# Settings that fix the batch sequence: a saved state only fits a sampler with the same values.
_STATE_SETTINGS = ("seed", "batch_size", "pool_size", "num_replicas", "drop_last", "shuffle", "num_cells")


def _resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Explicit values, else ``torch.distributed`` world size/rank when initialised, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise LangCellInputError(
            f"rank must be in [0, num_replicas) with num_replicas ≥ 1, got rank={rank}, num_replicas={num_replicas}.",
            "Pass num_replicas=trainer.world_size and rank=trainer.global_rank.",
        )
    return int(num_replicas), int(rank)


def _cell_positions(indices: Sequence[int] | np.ndarray | None, num_cells: int) -> np.ndarray:
    """The cells to sample from as int64 positions in [0, num_cells)."""
    if indices is None:
        return np.arange(num_cells, dtype=np.int64)
    positions = np.asarray(indices, dtype=np.int64).reshape(-1)
    if positions.size and (positions.min() < 0 or positions.max() >= num_cells):
        raise LangCellInputError(
            f"indices must be cell positions in [0, {num_cells}).", "Pass positions from a split of these cells."
        )
    return positions


def padding_efficiency(lengths: Sequence[int] | np.ndarray, batches: Iterable[Sequence[int]]) -> float:
    """Real tokens / padded tokens (``sum(len(b) * max length in b)``) over ``batches``, in (0, 1]."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch, dtype=np.int64)]
        if batch_lengths.size:
            real += int(batch_lengths.sum())
            padded += int(batch_lengths.max()) * batch_lengths.size
    return real / padded if padded else 1.0


def _positive_int(name: str, value: Any, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LangCellInputError(f"{name} must be a positive integer, got {value!r}.", f"Pass e.g. {name}={example}.")
    return int(value)


def _pool_sorted(cells: np.ndarray, lengths: np.ndarray, pool_cells: int) -> np.ndarray:
    """``cells`` cut into consecutive pools of ``pool_cells``, each sorted longest first (stable)."""
    pool_of = np.arange(len(cells)) // pool_cells
    return cells[np.lexsort((-lengths[cells], pool_of))]


def _deal(
    cells: np.ndarray,
    bounds: np.ndarray,
    lengths: np.ndarray,
    rng: np.random.Generator,
    shuffle: bool,
    num_replicas: int,
    drop_last: bool,
    last_is_partial: bool,
) -> np.ndarray:
    """Dealing order of the batches ``cells[bounds[j]:bounds[j + 1]]``: the batch ids [B'] to deal.

    With ``shuffle`` the order is seeded and the ``num_replicas`` most expensive batches (cells ×
    longest length) go first; then the list is trimmed (``drop_last``: the partial last batch and
    the excess over a multiple of ``num_replicas``) or padded by repeating its first batches.
    """
    ids = np.arange(len(bounds) - 1 - (last_is_partial and drop_last))
    if shuffle:
        ids = rng.permutation(len(ids))
        longest = np.maximum.reduceat(lengths[cells], bounds[:-1])[ids]
        cost = (bounds[ids + 1] - bounds[ids]) * longest
        first = np.zeros(len(ids), dtype=bool)
        first[np.argsort(-cost, kind="stable")[:num_replicas]] = True
        ids = np.concatenate([ids[first][np.argsort(-cost[first], kind="stable")], ids[~first]])
    excess = len(ids) % num_replicas
    if drop_last:
        return ids[: len(ids) - excess]
    padding = (num_replicas - excess) % num_replicas
    return np.concatenate([ids, ids[np.arange(padding) % len(ids)]])


class _DealtBatchSampler(Sampler[list[int]]):
    """What the training batch samplers share: per-(seed, epoch) plans dealt round-robin to the
    DDP ranks, the ``sampler``/``set_epoch`` hooks Lightning calls, and exact mid-epoch resume.

    A subclass plans an epoch in :meth:`_epoch_plan` as (cells, bounds, dealt ids): batch ``j`` is
    ``cells[bounds[j]:bounds[j + 1]]`` and rank r takes the ids at positions r, r + R, ...
    """

    def __init__(self, lengths, seed, pool_size, num_replicas, rank, drop_last, shuffle, indices) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.pool_size = _positive_int("pool_size", pool_size, 50)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise LangCellInputError(f"seed must be a non-negative integer, got {seed!r}.", "Pass e.g. seed=0.")
        self.cells = _cell_positions(indices, len(self.lengths))
        self.seed = int(seed)
        self.num_replicas, self.rank = _resolve_replicas(num_replicas, rank)
        self.shuffle = bool(shuffle)
        # Private on purpose: see the module docstring (Lightning would rebuild the sampler wrongly).
        self._drop_last = bool(drop_last)
        self.epoch = 0
        self._skip = 0  # batches of ``epoch`` to skip on the next iteration (resume)
        self._yielded = 0  # batches of ``epoch`` handed out so far on this rank (incl. skipped)

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _require_batches(self, settings: str, size_setting: str) -> None:
        """Refuse settings that leave a rank without a batch (DDP would hang, training would do nothing)."""
        if len(self) == 0:
            raise LangCellInputError(
                f"{len(self.cells)} cells give no batch per rank with {settings}, "
                f"num_replicas={self.num_replicas}, drop_last={self._drop_last}.",
                f"Lower {size_setting}, use drop_last=False, or provide more cells.",
            )

    def _batching_settings(self) -> dict[str, Any]:
        """The subclass's settings that shape its batches."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            **self._batching_settings(),
            "pool_size": self.pool_size,
            "num_replicas": self.num_replicas,
            "drop_last": self._drop_last,
            "shuffle": self.shuffle,
            "num_cells": len(self.cells),
        }

    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """The cells in the epoch's seeded order (kept in order without ``shuffle``)."""
        return self.cells[rng.permutation(len(self.cells))] if self.shuffle else self.cells

    def _batches_per_rank(self, epoch: int) -> int:
        return len(self._epoch_plan(epoch)[2]) // self.num_replicas

    @property
    def sampler(self) -> _DealtBatchSampler:
        """Self, so Lightning's per-epoch ``batch_sampler.sampler.set_epoch(epoch)`` reaches us."""
        return self

    def __len__(self) -> int:
        """Batches per rank in a full epoch ``self.epoch`` (the same on every rank; a resumed epoch yields fewer)."""
        return self._batches_per_rank(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields; a new epoch cancels a pending resume."""
        if epoch != self.epoch:
            self.epoch, self._skip, self._yielded = int(epoch), 0, 0

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of ``epoch`` in dealing order (rank r takes items r, r + R, ...)."""
        cells, bounds, ids = self._epoch_plan(epoch)
        return [cells[bounds[j] : bounds[j + 1]] for j in ids]

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (``len(self)`` of them for ``epoch == self.epoch``)."""
        return self.global_batches(epoch)[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        # The generator body runs at the first ``next``: epoch and skip are read then, so a
        # ``set_epoch``/``load_state_dict`` issued after ``iter()`` but before the first batch counts.
        epoch, skip = self.epoch, self._skip
        self._skip, self._yielded = 0, skip
        cells, bounds, ids = self._epoch_plan(epoch)
        for j in ids[self.rank :: self.num_replicas][skip:]:
            self._yielded += 1
            yield cells[bounds[j] : bounds[j + 1]].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Position in the batch sequence: ``epoch``, ``batches_consumed`` (+ settings, for checking).

        ``batches_consumed`` counts the batches this sampler has handed out in ``epoch``. With
        DataLoader workers that fetch ahead this is more than the model has seen: for exact
        resume under Lightning store the trainer's count instead (checked with 0 and 2 workers,
        checkpoints mid-epoch and at epoch end)::

            {**sampler.state_dict(), "epoch": trainer.current_epoch,
             "batches_consumed": trainer.fit_loop.epoch_loop.batch_progress.current.ready}
        """
        state = {"epoch": self.epoch, "batches_consumed": self._yielded}
        state.update(self._settings())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields ``epoch``'s batches after the first ``batches_consumed``.

        Settings stored in ``state`` must match this sampler's (else the skipped batches would
        be other batches). ``rank`` is not stored: each rank consumed the same number of batches.
        A finished epoch (``batches_consumed`` = the epoch's batches per rank) resumes at the
        start of the next epoch, so an iterator created before Lightning's ``set_epoch`` (workers
        start fetching at ``iter()``) already serves the right epoch.
        """
        settings = self._settings()
        mismatched = [
            f"{key}: saved {state[key]!r}, now {value!r}"
            for key, value in settings.items()
            if key in state and state[key] != value
        ]
        if mismatched:
            raise LangCellInputError(
                f"The saved sampler state does not fit this sampler ({'; '.join(mismatched)}).",
                "Resume with the same sampler settings, or restart at an epoch boundary with "
                "load_state_dict({'epoch': next_epoch, 'batches_consumed': 0}).",
            )
        consumed, epoch = int(state.get("batches_consumed", 0)), int(state["epoch"])
        per_rank = self._batches_per_rank(epoch)
        if not 0 <= consumed <= per_rank:
            raise LangCellInputError(
                f"batches_consumed={consumed} is outside [0, {per_rank}] (batches per rank in epoch {epoch}).",
                "Store the number of batches trained in the current epoch.",
            )
        if consumed == per_rank:  # saved at the epoch's end: resume at the start of the next one
            epoch, consumed = epoch + 1, 0
        self.epoch, self._skip, self._yielded = epoch, consumed, consumed


class LengthGroupedBatchSampler(_DealtBatchSampler):
    """Length-grouped, seeded, DDP-sharded, resumable batch sampler (yields lists of cell positions).

    Each epoch (when ``shuffle``): permute the cells with ``default_rng([seed, epoch])``, cut the
    permutation into pools of ``pool_size * batch_size`` cells, sort each pool by length
    (descending) and cut it into batches, shuffle the batch order, then move the
    ``num_replicas`` most expensive batches (cells × longest length) to the front so an
    out-of-memory error shows up on the first step of every rank. Without ``shuffle`` the cells
    keep their order, are pool-sorted the same way, and the batches stay in order.

    DDP: the global batch list is dealt out round-robin, batch ``j`` to rank ``j % num_replicas``;
    every rank computes the same list, so the shards are disjoint and depend only on
    (seed, epoch). Every rank gets the same number of batches (DDP hangs otherwise):

    * ``drop_last=False``: the one partial batch is kept and the list is padded by repeating its
      first batches (at most ``num_replicas - 1`` of them), so a few cells are seen twice.
    * ``drop_last=True``: the partial batch and the last ``len % num_replicas`` batches are
      dropped, so a few cells (different ones each epoch) are not seen.

    Args:
        lengths: token count of every cell of the dataset [N] (e.g. ``CellCorpus.lengths``).
        batch_size: cells per batch.
        seed: non-negative integer.
        pool_size: batches' worth of cells sorted together; larger → less padding, less
            randomness in which cells share a batch.
        num_replicas, rank: DDP world size and this process's rank (None: from
            ``torch.distributed`` when initialised, else 1 and 0).
        drop_last: see above.
        shuffle: seeded shuffling (training); False gives a fixed, still length-grouped order.
        indices: sample only these cell positions (e.g. the train split); None means all cells.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int = 0,
        pool_size: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        shuffle: bool = True,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self._batch_size = _positive_int("batch_size", batch_size, 8)
        super().__init__(lengths, seed, pool_size, num_replicas, rank, drop_last, shuffle, indices)
        self._require_batches(f"batch_size={batch_size}", "batch_size")

    def _batches_per_rank(self, epoch: int) -> int:
        """The same for every epoch, known without planning one."""
        full, partial = divmod(len(self.cells), self._batch_size)
        if self._drop_last:
            return full // self.num_replicas
        return math.ceil((full + (partial > 0)) / self.num_replicas)

    def batch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch as arrays: (cells [M] grouped by length, dealt batch ids [B]).

        Batch ``j`` is ``cells[j * batch_size : (j + 1) * batch_size]``; rank r takes the ids at
        positions r, r + R, ... of the dealt list. O(M) memory, one sort: fine for 10^7 cells.
        """
        cells, _, ids = self._epoch_plan(epoch)
        return cells, ids

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(epoch)])
        cells = self._epoch_order(rng)
        cells = _pool_sorted(cells, self.lengths, self.pool_size * self._batch_size)
        bounds = np.append(np.arange(0, len(cells), self._batch_size), len(cells))
        partial = len(cells) % self._batch_size > 0
        ids = _deal(cells, bounds, self.lengths, rng, self.shuffle, self.num_replicas, self._drop_last, partial)
        return cells, bounds, ids

    def _batching_settings(self) -> dict[str, Any]:
        return {"batch_size": self._batch_size}


def budget_bounds(tokens: np.ndarray, max_tokens: int, max_cells: int, segment: int | None = None) -> np.ndarray:
    """Greedy cut of a cell sequence by token budget: batch offsets [B + 1].

    Each batch takes the next cells while its real tokens stay ≤ ``max_tokens`` and it has at most
    ``max_cells`` cells; a cell over the budget on its own makes a batch of one. With ``segment``
    no batch crosses a multiple of ``segment`` (a pool boundary: the shortest cells of one sorted
    pool would otherwise share a batch, padded, with the longest of the next). One
    ``searchsorted`` per batch on the cumulative token counts.
    """
    ends = np.cumsum(tokens, dtype=np.int64)
    segment = segment or max(len(tokens), 1)
    bounds = [0]
    while bounds[-1] < len(tokens):
        start = bounds[-1]
        before = ends[start - 1] if start else 0
        fit = int(np.searchsorted(ends, before + max_tokens, side="right"))
        limit = (start // segment + 1) * segment
        bounds.append(max(start + 1, min(fit, start + max_cells, limit)))
    return np.asarray(bounds, dtype=np.int64)


class TokenBudgetBatchSampler(_DealtBatchSampler):
    """Batches cut by a budget of real tokens (yields lists of cell positions); seeded, DDP-sharded, resumable.

    A cell costs ``min(length + 1, max_length)`` tokens (``<cls>`` + its genes, capped as the
    collator does). Each epoch: permute the cells with ``default_rng([seed, epoch])`` (when
    ``shuffle``), sort pools of ``pool_size * max_cells`` cells longest first (when
    ``group_by_length``: the padded path then pads little too), then cut each pool greedily:
    a batch takes cells while its tokens stay ≤ ``max_tokens`` and it has ≤ ``max_cells`` cells;
    a cell longer than the budget gets a batch of its own (:func:`budget_bounds`). Batch order, the most expensive
    batches first, the round-robin deal to the DDP ranks and ``drop_last`` are as in
    :class:`LengthGroupedBatchSampler` (the partial batch is the last batch of the cut).

    The number of batches depends on how the cells fall into batches, so it can differ by a few
    between epochs; ``len(self)`` is that of ``self.epoch`` and is the same on every rank.
    Lightning reads ``len`` when it loads the train loader: for several epochs with exact
    per-epoch counts use ``Trainer(reload_dataloaders_every_n_epochs=1)`` (the data module builds
    the sampler at the trainer's current epoch); otherwise an epoch with more batches than the
    first is cut at the first's count, or one with fewer ends when its batches run out.

    Args:
        lengths: genes of every cell of the dataset [N] (e.g. ``CellCorpus.lengths``).
        max_tokens: budget of real tokens per batch.
        max_cells: cap on cells per batch.
        max_length: tokens a cell can take at most, ``<cls>`` included (None: no cap).
        group_by_length: sort pools by length before cutting (less padding in padded batches).
        seed, pool_size, shuffle, drop_last, num_replicas, rank, indices: as for
            :class:`LengthGroupedBatchSampler` (``pool_size`` counts ``max_cells`` cells).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        max_cells: int,
        max_length: int | None = None,
        seed: int = 0,
        group_by_length: bool = True,
        pool_size: int = 50,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.max_tokens = _positive_int("max_tokens", max_tokens, 16384)
        self.max_cells = _positive_int("max_cells", max_cells, 64)
        self.max_length = None if max_length is None else _positive_int("max_length", max_length, 2048)
        self.group_by_length = bool(group_by_length)
        super().__init__(lengths, seed, pool_size, num_replicas, rank, drop_last, shuffle, indices)
        self.tokens = self.lengths + 1 if max_length is None else np.minimum(self.lengths + 1, self.max_length)
        self._plan_cache: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._require_batches(f"max_tokens={max_tokens}, max_cells={max_cells}", "max_tokens")

    def batch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch as arrays: (cells [M] in batch order, batch offsets [B + 1], dealt batch ids).

        Batch ``j`` is ``cells[bounds[j] : bounds[j + 1]]``; rank r takes the ids at positions
        r, r + R, ... of the dealt list.
        """
        return self._epoch_plan(epoch)

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_plan`, cached for the last epoch asked (``len`` and iteration both need it)."""
        if self._plan_cache is None or self._plan_cache[0] != epoch:
            self._plan_cache = (int(epoch), self._plan(int(epoch)))
        return self._plan_cache[1]

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        cells = self._epoch_order(rng)
        pool_cells = self.pool_size * self.max_cells if self.group_by_length else None
        if pool_cells:
            cells = _pool_sorted(cells, self.lengths, pool_cells)
        bounds = budget_bounds(self.tokens[cells], self.max_tokens, self.max_cells, segment=pool_cells)
        ids = _deal(cells, bounds, self.tokens, rng, self.shuffle, self.num_replicas, self._drop_last, True)
        return cells, bounds, ids

    def _batching_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("max_tokens", "max_cells", "max_length", "group_by_length")}


class DistributedEvalSampler(DistributedSampler):
    """One rank's shard of the cells for val/test/predict: every cell exactly once across ranks.

    Shards differ in size by at most one cell (so ranks may run one batch more or fewer): fine
    for predict and epoch-level metrics (torchmetrics, ``self.log(..., on_epoch=True,
    sync_dist=True)``), but avoid per-step collectives (``sync_dist=True`` with ``on_step``)
    during evaluation.

    Args:
        cells: number of cells N (positions 0..N-1) or the positions to evaluate (e.g. a split).
        num_replicas, rank: as for :class:`LengthGroupedBatchSampler`.
        contiguous: True → rank r gets the r-th contiguous block (``np.array_split``), so the
            ranks' outputs concatenated in rank order are in cell order; False → strided
            (cells r, r + R, ...), as Lightning's ``UnrepeatedDistributedSamplerWrapper``.
        lengths: token count of every cell [N]; when given, the shard is yielded longest first
            so a plain ``batch_size`` DataLoader groups similar lengths (pair predictions with
            the yielded positions to restore cell order).
    """

    def __init__(
        self,
        cells: int | Sequence[int] | np.ndarray,
        num_replicas: int | None = None,
        rank: int | None = None,
        contiguous: bool = True,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        num_replicas, rank = _resolve_replicas(num_replicas, rank)
        if isinstance(cells, (int, np.integer)):
            positions = np.arange(int(cells), dtype=np.int64)
        else:
            bound = len(lengths) if lengths is not None else np.iinfo(np.int64).max
            positions = _cell_positions(cells, bound)
        super().__init__(positions, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        shard = np.array_split(positions, num_replicas)[rank] if contiguous else positions[rank::num_replicas]
        if lengths is not None:
            shard = shard[np.argsort(-np.asarray(lengths)[shard], kind="stable")]
        self.shard = shard
        self.num_samples = len(shard)  # DistributedSampler's own fields, without padding
        self.total_size = len(positions)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard.tolist())

    def __len__(self) -> int:
        return len(self.shard)
