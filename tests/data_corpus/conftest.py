"""Fixtures of the corpus tests: two real .h5ad inputs, a tokenizer, a duck-typed stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest

SOURCE = Path(__file__).parent.parent / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"


@pytest.fixture(scope="session")
def pbmc_files(tmp_path_factory) -> tuple[str, str]:
    """Two inputs from the 50 real cells: A = cells 0-24 (cell 3 skipped by filter_pass),
    B = cells 25-49 (cell 29 → B row 4 is empty), B without ``donor_id`` and with an integer
    ``batch`` (text in A)."""
    folder = tmp_path_factory.mktemp("inputs")
    cells = ad.read_h5ad(SOURCE)
    first, second = cells[:25].copy(), cells[25:].copy()
    del second.obs["donor_id"]
    second.obs["batch"] = np.int64(7)
    paths = (folder / "pbmc_a.h5ad", folder / "pbmc_b.h5ad")
    first.write_h5ad(paths[0])
    second.write_h5ad(paths[1])
    return str(paths[0]), str(paths[1])


@pytest.fixture(scope="session")
def tokenizer():
    from lightning_langcell.tokenization import CellTokenizer

    return CellTokenizer(keep_empty=True)  # file B's empty cell stays: its storage is tested


class _Vocabulary:
    def __init__(self, size: int, checksum: str):
        self.size, self.checksum = size, checksum

    def __len__(self) -> int:
        return self.size


@dataclass
class _Report:
    counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.counts)


class StandInTokenizer:
    """Duck-typed tokenizer: genes ranked by raw count (stable), token = 2 + var position
    (+ ``shift``); cells with ``filter_pass == 0`` skipped."""

    def __init__(self, vocab_size: int = 25427, checksum: str = "stand-in-vocabulary", shift: int = 0):
        self.vocabulary = _Vocabulary(vocab_size, checksum)
        self.shift = shift
        self.report = _Report()

    def settings(self) -> dict:
        return {"kind": "stand-in", "shift": self.shift, "vocabulary_checksum": self.vocabulary.checksum}

    def tokenize(self, path) -> list[np.ndarray]:
        return [tokens for chunk in self.iter_chunks(path) for tokens in chunk.tokens]

    def iter_chunks(self, path, chunk_size=None):
        cells = ad.read_h5ad(path)
        keep = cells.obs["filter_pass"].to_numpy() != 0 if "filter_pass" in cells.obs else np.ones(cells.n_obs, bool)
        rows = np.flatnonzero(keep)
        dense = np.asarray(cells.X.todense())
        step = chunk_size or 16
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            tokens = []
            for row in part:
                genes = np.flatnonzero(dense[row])
                order = np.argsort(-dense[row, genes], kind="stable")
                tokens.append((genes[order] + 2 + self.shift).astype(np.int32))
            yield SimpleNamespace(tokens=tokens, obs=cells.obs.iloc[part], rows=part)
        self.report = _Report({"cells_seen": cells.n_obs, "cells_tokenized": len(rows)})


@pytest.fixture()
def stand_in():
    return StandInTokenizer


def _expected_obs(paths) -> pd.DataFrame:
    """The kept cells' obs of ``paths`` (filter_pass != 0), with their file and row."""
    frames = []
    for path in paths:
        obs = ad.read_h5ad(path, backed="r").obs.copy()
        obs["source_file"] = os.path.abspath(path)
        obs["source_index"] = np.arange(len(obs))
        obs["obs_name"] = obs.index
        frames.append(obs[obs["filter_pass"] != 0])
    return pd.concat(frames, ignore_index=True)


@pytest.fixture()
def expected_obs():
    return _expected_obs
