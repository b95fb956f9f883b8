""""None of these": a per-cell unknown score, and how well it separates cells of a type that is
not among the candidate classes.

- :func:`unknown_score`: high when the cell fits no candidate well: ``1 − (p₁ − p₂)`` (one minus
  the margin between the two most probable classes; default) or ``1 − p₁`` (one minus the best
  class's probability). The margin is the default because the final probabilities are flat and
  their maximum shrinks with the number of classes, the margin much less so.
- :func:`left_out_auroc`: AUROC of the unknown score for the cells of a type left out of the
  candidates (positives) against the other cells: 0.5 = no better than chance, 1 = every left-out
  cell scores higher than every other cell.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from lightning_langcell.errors import LangCellInputError

UNKNOWN_SCORES = ("margin", "max_probability")


def unknown_score(probabilities: np.ndarray, kind: str = "margin") -> np.ndarray:
    """Unknown score [N] of class probabilities [N, C] (NaN rows stay NaN); see the module doc."""
    if kind not in UNKNOWN_SCORES:
        raise LangCellInputError(f"Unknown score kind {kind!r}.", f"Use one of {UNKNOWN_SCORES}.")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise LangCellInputError(f"Probabilities of shape {probabilities.shape}: need [cells, classes >= 2].",
                                 "Pass one row per cell and one column per candidate class.")
    top_two = -np.sort(-probabilities, axis=1)[:, :2]  # NaN sorts last: a NaN row keeps a NaN
    best = np.where(np.isnan(probabilities).any(axis=1), np.nan, top_two[:, 0])
    return 1.0 - best if kind == "max_probability" else 1.0 - (best - top_two[:, 1])


def left_out_auroc(scores: np.ndarray, is_left_out: np.ndarray) -> float:
    """AUROC of ``scores`` [N] (higher = more likely unknown) for the cells with ``is_left_out`` [N]
    against the rest; cells with a NaN score are skipped. NaN when either group is empty."""
    scores, is_left_out = np.asarray(scores, dtype=np.float64), np.asarray(is_left_out, dtype=bool)
    if scores.shape != is_left_out.shape:
        raise LangCellInputError(f"{scores.shape} scores for {is_left_out.shape} labels.",
                                 "Pass one score and one left-out flag per cell.")
    kept = ~np.isnan(scores)
    scores, is_left_out = scores[kept], is_left_out[kept]
    if is_left_out.all() or not is_left_out.any():
        return float("nan")
    return float(binary_auroc(torch.from_numpy(scores), torch.from_numpy(is_left_out.astype(np.int64))))
