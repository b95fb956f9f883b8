"""Cell–text matching (CTM) head on the CLS state of the fusion pass."""

from __future__ import annotations

import torch
from torch import nn


class MatchHead(nn.Linear):
    """``ctm_head``: Linear(text hidden → 2); logits [N, 2] = (no match, match).

    A plain ``nn.Linear`` subclass, so its state dict is the released ``ctm_head.bin``
    (``weight`` [2, H], ``bias`` [2]).
    """

    def __init__(self, text_hidden_size: int):
        super().__init__(text_hidden_size, 2)

    @staticmethod
    def match_probability(logits: torch.Tensor) -> torch.Tensor:
        """Probability of a match, softmax(logits)[..., 1]; [..., 2] → [...]."""
        return logits.softmax(dim=-1)[..., 1]
