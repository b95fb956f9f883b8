"""Zero-shot class scores from cell/text embeddings and fusion-matcher logits (released recipe).

- CTC: ``softmax_c(cell · text_c / temperature)`` with the fixed temperature 0.05;
- CTM: per (cell, class) match probability ``softmax(ctm_logits)[..., 1]``, then a second
  softmax across classes (as the released code does);
- final: ``alpha · CTC + (1 − alpha) · CTM`` with ``alpha = 0.1``; prediction = argmax.
Pure tensor arithmetic, no model: the zero-shot task and the parity test share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OFFICIAL_TEMPERATURE = 0.05
OFFICIAL_ALPHA = 0.1


def ctc_logits(cell_embedding: torch.Tensor, text_embedding: torch.Tensor,
               temperature: float = OFFICIAL_TEMPERATURE) -> torch.Tensor:
    """Cosine similarity / temperature: cells [B, E], class texts [C, E] (L2-normalised) → [B, C]."""
    return cell_embedding @ text_embedding.T / temperature


def ctm_match_probability(ctm_logits: torch.Tensor) -> torch.Tensor:
    """Match probability softmax(logits)[..., 1]: [B, C, 2] → [B, C]."""
    return ctm_logits.softmax(dim=-1)[..., 1]


def ctm_class_probabilities(match_probability: torch.Tensor) -> torch.Tensor:
    """The released code's second softmax, across classes: [B, C] → [B, C]."""
    return match_probability.softmax(dim=-1)


def blend(ctc_probs: torch.Tensor, ctm_probs: torch.Tensor, alpha: float = OFFICIAL_ALPHA) -> torch.Tensor:
    """``alpha · ctc + (1 − alpha) · ctm``."""
    return alpha * ctc_probs + (1.0 - alpha) * ctm_probs


@dataclass(frozen=True)
class ZeroShotScores:
    """All intermediate scores, each [B, C] (``pred`` [B] int64)."""

    ctc_logits: torch.Tensor
    ctc_probs: torch.Tensor
    ctm_match_prob: torch.Tensor
    ctm_probs: torch.Tensor
    probs_avg: torch.Tensor
    final_probs: torch.Tensor
    pred: torch.Tensor


def zero_shot_scores(cell_embedding: torch.Tensor, text_embedding: torch.Tensor, ctm_logits: torch.Tensor,
                     temperature: float = OFFICIAL_TEMPERATURE, alpha: float = OFFICIAL_ALPHA) -> ZeroShotScores:
    """Scores for B cells against C classes.

    ``cell_embedding`` [B, E], ``text_embedding`` [C, E] (L2-normalised), ``ctm_logits`` [B, C, 2]
    (matcher logits for cell b paired with class text c).
    """
    logits = ctc_logits(cell_embedding, text_embedding, temperature)
    ctc_probs = logits.softmax(dim=-1)
    match = ctm_match_probability(ctm_logits)
    ctm_probs = ctm_class_probabilities(match)
    final = blend(ctc_probs, ctm_probs, alpha)
    return ZeroShotScores(
        ctc_logits=logits,
        ctc_probs=ctc_probs,
        ctm_match_prob=match,
        ctm_probs=ctm_probs,
        probs_avg=blend(ctc_probs, ctm_probs, 0.5),
        final_probs=final,
        pred=final.argmax(dim=-1),
    )
