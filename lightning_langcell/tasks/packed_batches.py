"""Which tasks may train on packed cell batches (``data.packed``): only those that read the cells
through ``cu_seqlens`` (pre-training). Any other task would take a packed batch for one long cell,
so it is refused at setup, before any step."""

from __future__ import annotations

from typing import Any

from lightning_langcell.errors import LangCellInputError


def check_packed_batches(task: Any, datamodule: Any) -> None:
    """Raise when ``datamodule`` serves packed batches and ``task`` does not declare
    ``accepts_packed_batches = True``."""
    hparams = getattr(datamodule, "hparams", None)
    if hparams is None or not hparams.get("packed", False) or getattr(task, "accepts_packed_batches", False):
        return
    name = type(task).__name__
    raise LangCellInputError(
        f"data.packed is true, but {name} reads padded cell batches: it would take each packed batch "
        "for one long cell. Packed batches are for pre-training (LangCellPretraining) only.",
        f"Set data.packed: false (drop --data.packed true) for {name}.",
    )
