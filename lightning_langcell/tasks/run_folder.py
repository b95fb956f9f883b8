"""Run folders that name what was run: ``<save_dir>/<name>/<dataset>/<version>``.

Used by the classification recipes, whose ``version`` interpolates k and the seed
(``k${data.k_shot}_seed${data.seed}``) and whose ``dataset`` is ``${data.data}``: a run with
another dataset, k or seed never overwrites another run's checkpoints and results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from lightning.pytorch.loggers import TensorBoardLogger


def dataset_name(data: str | os.PathLike | Sequence[str | os.PathLike] | None) -> str | None:
    """Folder name of the data: the stem of an .h5ad / the name of a corpus directory, several
    joined with ``+`` (None: no data given)."""
    if data is None:
        return None
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    return "+".join(Path(path).stem if Path(path).suffix == ".h5ad" else Path(path).name for path in paths) or None


class DatasetRunLogger(TensorBoardLogger):
    """TensorBoard logger writing to ``<save_dir>/<name>/<dataset name>/<version>``.

    Args:
        dataset: the data module's ``data`` (``${data.data}`` in a recipe); None: no dataset level.
        save_dir, name, version, **kwargs: as ``TensorBoardLogger``.
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "lightning_logs", version: int | str | None = None,
                 dataset: str | Sequence[str] | None = None, **kwargs: Any):
        folder = dataset_name(dataset)
        super().__init__(save_dir, name=name if folder is None else f"{name}/{folder}", version=version, **kwargs)
