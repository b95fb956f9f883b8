"""Few-shot annotation from labelled cells of the annotated data itself.

Shared by :func:`~lightning_langcell.inference.annotate` (``few_shot_labels=<obs column>``),
:func:`~lightning_langcell.inference.few_shot_annotate.few_shot_annotate` (a labelled reference)
and the CLI (``--model.init_args.few_shot_labels <obs column>``):

- :func:`labelled_codes`: the candidate class index of each cell's label (-1: no label), with one
  clear error for a missing column, labels outside the candidate classes or no label at all;
- :func:`adapter_results`: fit an adapter of :mod:`lightning_langcell.inference.adapters` on the
  labelled cells' frozen outputs and score every cell: obs ``langcell_few_shot_prediction``,
  obsm ``langcell_few_shot_scores`` [N, C] and the settings for ``uns["langcell"]["few_shot"]``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.adapters import ADAPTERS, fit_adapter
from lightning_langcell.inference.classes import CandidateClasses, obs_labels, truth_indices

FEW_SHOT_PREDICTION_KEY = "langcell_few_shot_prediction"
FEW_SHOT_SCORES_KEY = "langcell_few_shot_scores"


def check_adapter(adapter: str) -> None:
    """Refuse an unknown adapter name."""
    if adapter not in ADAPTERS:
        raise LangCellInputError(f"Unknown adapter {adapter!r}.", f"Use one of {list(ADAPTERS)}.")


def labelled_codes(obs: pd.DataFrame, column: str, classes: CandidateClasses) -> np.ndarray:
    """Class index [n] of each cell's label in ``obs[column]`` (-1: empty); errors on labels outside the classes."""
    if column not in obs.columns:
        raise LangCellInputError(f"Few-shot label column {column!r} is not in obs (columns: {list(obs.columns)}).",
                                 "Name the obs column that holds the labels of your labelled cells.")
    labels = obs_labels(obs, column)
    codes = truth_indices(labels, classes)
    unknown = sorted(set(labels[(codes < 0) & labels.notna().to_numpy()].astype(str)))
    if unknown:
        raise LangCellInputError(f"Labels {unknown} of obs[{column!r}] are not among the candidate classes "
                                 f"{list(classes.names)}.",
                                 "Add them to the candidate classes, or leave those cells unlabelled (empty).")
    if not (codes >= 0).any():
        raise LangCellInputError(f"No cell has a label in obs[{column!r}].",
                                 "Give a few cells per class a label in that column (the others stay empty).")
    return codes


def adapter_results(adapter: str, probabilities: np.ndarray, embeddings: np.ndarray,
                    text_embeddings: torch.Tensor, codes: np.ndarray,
                    classes: CandidateClasses) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(obs columns, obsm entries, settings) of the adapter fitted on the cells with ``codes`` >= 0.

    ``probabilities`` [N, C] (zero-shot) and ``embeddings`` [N, E]: NaN rows are cells that were
    not scored; they get no few-shot prediction either.
    """
    check_adapter(adapter)
    with torch.inference_mode(False), torch.enable_grad():  # Lightning predicts in inference mode
        fitted, emb, log_probs, scored, keep, seconds = fitted_adapter(adapter, probabilities, embeddings,
                                                                       text_embeddings, codes)
    scores = torch.full((len(emb), len(classes)), float("nan"))
    scores[scored] = fitted.scores(emb[scored], log_probs[scored]).float()
    predicted = np.where(scored.numpy(), scores.nan_to_num(float("-inf")).argmax(dim=1).numpy(), -1)
    obs = {FEW_SHOT_PREDICTION_KEY: pd.Categorical.from_codes(predicted,
                                                              categories=pd.Index(classes.names, dtype=object))}
    info = {"adapter": adapter, "n_labelled_cells": int(keep.sum()), "fit_seconds": round(seconds, 3),
            **fitted.settings()}
    return obs, {FEW_SHOT_SCORES_KEY: scores.numpy()}, info


def fitted_adapter(adapter: str, probabilities: np.ndarray, embeddings: np.ndarray, text_embeddings: torch.Tensor,
                   codes: np.ndarray):
    """(fitted adapter, embeddings, zero-shot log-probabilities, scored mask, labelled mask, fit seconds)."""
    emb = torch.from_numpy(np.array(embeddings, dtype=np.float32))
    log_probs = torch.from_numpy(np.array(probabilities, dtype=np.float32)).clamp_min(1e-12).log()
    scored = ~(emb.isnan().any(dim=1) | log_probs.isnan().any(dim=1))
    keep = scored & torch.from_numpy(np.asarray(codes) >= 0)
    if not bool(keep.any()):
        raise LangCellInputError("No labelled cell could be scored (no vocabulary gene).",
                                 "Check the labelled cells' counts and var['ensembl_id'].")
    started = time.perf_counter()
    fitted = fit_adapter(adapter, emb[keep], torch.from_numpy(np.asarray(codes))[keep], text_embeddings.clone(),
                         log_probs[keep], reference=emb[scored])
    return fitted, emb, log_probs, scored, keep, time.perf_counter() - started
