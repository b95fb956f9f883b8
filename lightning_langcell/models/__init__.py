"""Pure ``nn.Module`` models: cell encoder, BLIP-"med" text encoder with fusion, matcher, LangCell."""

from lightning_langcell.models.config import (
    LangCellConfig,
    TextEncoderConfig,
    list_presets,
)
from lightning_langcell.models.langcell import LangCellModel
from lightning_langcell.models.text_encoder import TextEncoder
from lightning_langcell.models.zero_shot_scores import ZeroShotScores, zero_shot_scores

__all__ = [
    "LangCellConfig",
    "LangCellModel",
    "TextEncoder",
    "TextEncoderConfig",
    "ZeroShotScores",
    "list_presets",
    "zero_shot_scores",
]
