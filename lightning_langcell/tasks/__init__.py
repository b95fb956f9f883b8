"""LightningModules: pre-training and the tasks that use a LangCell model.

Imported on first use, so helpers such as ``tasks.metrics`` do not pay for ``import lightning``.
"""

from __future__ import annotations

import importlib

_LAZY_EXPORTS = {
    "CellClassificationTask": "lightning_langcell.tasks.classify",
    "CellTypeClassifier": "lightning_langcell.tasks.cell_classifier",
    "FewShotLangCell": "lightning_langcell.tasks.few_shot",
    "LangCellEmbedder": "lightning_langcell.tasks.embed",
    "LangCellPretraining": "lightning_langcell.tasks.pretrain",
    "LangCellZeroShot": "lightning_langcell.tasks.zero_shot",
}
__all__ = list(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_langcell.tasks' has no attribute {name!r}")
