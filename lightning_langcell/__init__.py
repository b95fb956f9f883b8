"""lightning_langcell: LangCell language-cell pre-training as a PyTorch Lightning model zoo.

The public API is imported on first use, so ``import lightning_langcell`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "LangCellModel": "lightning_langcell.hub",  # hub installs its checkpoint methods
    "LangCellConfig": "lightning_langcell.models",
    "CellTokenizer": "lightning_langcell.tokenization",
    "CellCorpus": "lightning_langcell.data.corpus",
    "CellTextBuilder": "lightning_langcell.text",
    "load_model": "lightning_langcell.hub",
    "load_text_tokenizer_for": "lightning_langcell.hub",
    "save_pretrained": "lightning_langcell.hub",
    "list_pretrained": "lightning_langcell.hub.registry",
    "annotate": "lightning_langcell.inference.annotate",
}
__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_langcell' has no attribute {name!r}")
