"""Map-style dataset over a :class:`CellCorpus`: tokens, the cell's text and its label."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from lightning_langcell.data.masking import IGNORE_INDEX


class CellDataset(Dataset):
    """Cells ``indices`` of a corpus, each with optional text tokens and class label.

    ``text_tokens[k]`` are the token ids of distinct text ``k``; ``text_ids[i]`` names the text
    of corpus cell ``i``; ``labels[i]`` its class index (-100 when unknown). Keys may be a
    corpus-local position or ``(epoch, position)`` so MGM masks are seeded per epoch.
    """

    def __init__(
        self,
        corpus,
        indices: Sequence[int],
        text_tokens: Sequence[Sequence[int]] | None = None,
        text_ids: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ):
        self.corpus = corpus
        self.indices = np.asarray(indices).astype(index_dtype(len(corpus)), copy=False)
        self.text_tokens = text_tokens
        self.text_ids = text_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        index = int(self.indices[position])
        item: dict[str, Any] = {
            "index": index,
            "epoch": int(epoch),
            "input_ids": self.corpus.input_ids(index),
        }
        if self.labels is not None:
            label = int(self.labels[index])
            item["label"] = label if label >= 0 else IGNORE_INDEX
        if self.text_tokens is not None and self.text_ids is not None:
            text_id = int(self.text_ids[index])
            item["text_id"] = text_id
            item["text_tokens"] = self.text_tokens[text_id]
        return item

    @property
    def lengths(self) -> np.ndarray:
        """Gene-token count of each cell in this dataset (for length grouping)."""
        return np.asarray(self.corpus.lengths)[self.indices]


def index_dtype(n_cells: int) -> type:
    """Cell positions of a corpus of ``n_cells``: int32 when they fit (half the memory), else int64."""
    return np.int32 if n_cells <= np.iinfo(np.int32).max else np.int64


class EpochTaggedBatches:
    """Wraps a batch sampler so each key carries the epoch: ``[(epoch, position), ...]``."""

    def __init__(self, batch_sampler):
        self.batch_sampler = batch_sampler
        self.epoch = 0

    @property
    def sampler(self) -> "EpochTaggedBatches":
        """Lightning calls ``batch_sampler.sampler.set_epoch(epoch)``: route it here."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batch_sampler:
            yield [(self.epoch, position) for position in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def state_dict(self) -> dict:
        inner = getattr(self.batch_sampler, "state_dict", None)
        return {"epoch": self.epoch, "sampler": inner() if inner else None}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        if state.get("sampler") is not None and hasattr(self.batch_sampler, "load_state_dict"):
            self.batch_sampler.load_state_dict(state["sampler"])
