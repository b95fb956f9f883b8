""""None of these": a per-cell unknown score, and how well it separates cells of a type that is
not among the candidate classes.

- :func:`unknown_score`: high when the cell fits no candidate well: ``1 − (p₁ − p₂)`` (one minus
  the margin between the two most probable classes), ``1 − p₁`` (one minus the best
  class's probability) or the entropy of the probabilities divided by ``log C`` (0 = one class
  certain, 1 = uniform; :data:`DEFAULT_UNKNOWN_SCORE`, what annotations store).
  :func:`disagreement_score`: total variation between the similarity (CTC) and matcher (CTM)
  class distributions.
- :func:`abstention_threshold`: the default abstention rule, the ``1 − rate`` quantile of the
  unknown scores of cells whose type *is* a candidate, so that a fraction ``rate`` of them
  (default 5 %) is marked unknown. The score and the threshold were chosen on the pre-training
  datasets (``benchmarks/unknown_score_selection.py``), see :data:`DEFAULT_UNKNOWN_THRESHOLD`.
- :func:`left_out_auroc`: AUROC of the unknown score for the cells of a type left out of the
  candidates (positives) against the other cells: 0.5 = no better than chance, 1 = every left-out
  cell scores higher than every other cell.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from lightning_langcell.errors import LangCellInputError

UNKNOWN_SCORES = ("margin", "max_probability", "entropy")
DEFAULT_FALSE_ABSTENTION = 0.05
# chosen by ``python -m benchmarks.unknown_score_selection`` on the shipped checkpoint's pre-training
# datasets (held-out cells, at most 300 per dataset, leave-one-type-out), never on the never-seen sets:
# the kind with the highest mean AUROC (entropy 0.832, max probability 0.829, margin 0.815, match
# 0.763, disagreement 0.419), and the threshold marking DEFAULT_FALSE_ABSTENTION of the known-type
# cells unknown (0.988732, pooled over the datasets' left-out rounds; rounded to 4 decimals)
DEFAULT_UNKNOWN_SCORE = "entropy"
DEFAULT_UNKNOWN_THRESHOLD = 0.9887


def check_unknown_threshold(threshold: float | None) -> None:
    """Refuse a threshold that is not None or a number in [0, 1] (the unknown scores' range)."""
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise LangCellInputError(f"unknown_threshold must be None or lie in [0, 1], got {threshold!r}.",
                                 f"Use e.g. unknown_threshold={DEFAULT_UNKNOWN_THRESHOLD} (the default), or None.")


def unknown_score(probabilities: np.ndarray, kind: str = DEFAULT_UNKNOWN_SCORE) -> np.ndarray:
    """Unknown score [N] of class probabilities [N, C] (NaN rows stay NaN); see the module doc."""
    if kind not in UNKNOWN_SCORES:
        raise LangCellInputError(f"Unknown score kind {kind!r}.", f"Use one of {UNKNOWN_SCORES}.")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise LangCellInputError(f"Probabilities of shape {probabilities.shape}: need [cells, classes >= 2].",
                                 "Pass one row per cell and one column per candidate class.")
    top_two = -np.sort(-probabilities, axis=1)[:, :2]  # NaN sorts last: a NaN row keeps a NaN
    best = np.where(np.isnan(probabilities).any(axis=1), np.nan, top_two[:, 0])
    if kind == "entropy":
        logs = np.log(np.clip(probabilities, 1e-300, None))
        return -(probabilities * logs).sum(axis=1) / np.log(probabilities.shape[1])
    return 1.0 - best if kind == "max_probability" else 1.0 - (best - top_two[:, 1])


def disagreement_score(ctc_probs: np.ndarray, ctm_probs: np.ndarray) -> np.ndarray:
    """Total variation ``½ Σ_c |CTC − CTM|`` [N] between the two class distributions [N, C], in [0, 1]."""
    ctc_probs, ctm_probs = np.asarray(ctc_probs, dtype=np.float64), np.asarray(ctm_probs, dtype=np.float64)
    if ctc_probs.shape != ctm_probs.shape:
        raise LangCellInputError(f"CTC {ctc_probs.shape} and CTM {ctm_probs.shape} probabilities differ in shape.",
                                 "Pass both distributions over the same cells and classes.")
    return 0.5 * np.abs(ctc_probs - ctm_probs).sum(axis=1)


def abstention_threshold(known_scores: np.ndarray, false_abstention: float = DEFAULT_FALSE_ABSTENTION) -> float:
    """Unknown-score threshold above which a fraction ``false_abstention`` of ``known_scores`` [N]
    (cells whose type is a candidate; NaN skipped) lies: the ``1 − false_abstention`` quantile
    (linear interpolation). A cell is unknown when its score is strictly above the threshold."""
    if not 0.0 < false_abstention < 1.0:
        raise LangCellInputError(f"false_abstention must lie in (0, 1), got {false_abstention}.",
                                 "Use e.g. 0.05 (5 % of known-type cells marked unknown).")
    scores = np.asarray(known_scores, dtype=np.float64)
    scores = scores[~np.isnan(scores)]
    if scores.size == 0:
        raise LangCellInputError("No known-type scores to set a threshold on.", "Pass at least one scored cell.")
    return float(np.quantile(scores, 1.0 - false_abstention))


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
