"""Checkpoint hook shared by the tasks: store the model's full config in every Lightning ``.ckpt``.

With ``checkpoint["langcell_config"]`` a ``.ckpt`` rebuilds the exact architecture without the
task's constructor arguments (``lightning_langcell.hub.load_model("run.ckpt")``), even when the
model came from ``text_init`` / ``init_from`` folders that are no longer there.
"""

from __future__ import annotations

from typing import Any

from lightning_langcell.hub.lightning_ckpt import CKPT_CONFIG_KEY, CKPT_FORMAT_KEY
from lightning_langcell.hub.pretrained import CHECKPOINT_FORMAT_VERSION


class LangCellCheckpointMixin:
    """Mix into a LightningModule holding a ``LangCellModel`` as ``self.model`` (before the
    LightningModule base: ``class Task(LangCellCheckpointMixin, LangCellTask)``)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        model = getattr(self, "model", None)
        if model is not None and hasattr(model, "config"):
            checkpoint[CKPT_CONFIG_KEY] = model.config.to_dict()
            checkpoint[CKPT_FORMAT_KEY] = CHECKPOINT_FORMAT_VERSION
        super().on_save_checkpoint(checkpoint)
