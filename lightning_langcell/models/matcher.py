"""Cell–text matching (CTM) head on the CLS state of the fusion pass."""

from __future__ import annotations

from torch import nn


class MatchHead(nn.Linear):
    """``ctm_head``: Linear(text hidden → 2); logits [N, 2] = (no match, match).

    A plain ``nn.Linear`` subclass, so its state dict is the released ``ctm_head.bin``
    (``weight`` [2, H], ``bias`` [2]). The match probability is
    ``models.zero_shot_scores.ctm_match_probability``.
    """

    def __init__(self, text_hidden_size: int):
        super().__init__(text_hidden_size, 2)
