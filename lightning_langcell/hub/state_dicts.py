"""Safe reading and writing of weight files, and loading them into modules with a report.

Reads ``.bin``/``.pt`` pickles only with ``torch.load(weights_only=True)`` (tensors and plain
containers; code-carrying pickles are refused), ``.safetensors``, and HF sharded checkpoints
(``*.index.json`` with a ``weight_map``). Every failure raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from lightning_langcell.errors import CheckpointError
from lightning_langcell.io_utils import atomic_file


StateDict = dict[str, torch.Tensor]
#: Key of the word-embedding table in a BERT state dict (no ``bert.`` prefix).
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"

_TRUST_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("langcell_trust_pickle", default=False)


@contextlib.contextmanager
def trusted_pickles(enabled: bool = True):
    """Within this block, pickles refused by ``weights_only=True`` are unpickled in full (can run code)."""
    token = _TRUST_PICKLE.set(enabled)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; inside ``trusted_pickles()`` a refused
    pickle is loaded again with ``weights_only=False`` after a loud warning."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _TRUST_PICKLE.get():
            raise
    warnings.warn(
        f"UNSAFE: unpickling {path} with weights_only=False because trust_pickle=True was passed. "
        "This runs any code the file carries; do it only for files you made or fully trust.",
        UserWarning,
        stacklevel=3,
    )
    return torch.load(path, map_location="cpu", weights_only=False)

#: Weight files of an HF model folder, in order of preference.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from ``path``, or ``CheckpointError`` if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Missing {path}.", "Point to a complete checkpoint folder.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Cannot read {path}: {error}.", "Replace it with a valid JSON file.") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a JSON object.", "Replace it.")
    return data


def read_tensor_file(path: str | os.PathLike) -> StateDict:
    """Tensors of one ``.safetensors`` or pickled ``.bin``/``.pt`` state-dict file, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Missing weight file {path}.", "Point to a complete checkpoint folder.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"Cannot read {path}: {error}.", "Re-download or re-export the file.") from error
    try:
        data = torch_load(path)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors; it was refused unread (torch.load "
            "weights_only=True) because unpickling it could run code.",
            "Use a plain state-dict file (torch.save(module.state_dict())) or safetensors; if you trust "
            "the file, pass trust_pickle=True (load_model / convert --trust-pickle) to unpickle it.",
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"Cannot read {path} (truncated or not a torch file): {error}",
                              "Re-download or re-export the file.") from error
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is not a state dict (name → tensor).",
                              "Save it with torch.save(module.state_dict()).")
    return dict(data)


def read_weights_dir(directory: str | os.PathLike) -> tuple[StateDict, Path]:
    """The state dict of an HF model folder (single file or sharded) and the file it came from."""
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            return (_read_sharded(path) if name.endswith(".index.json") else read_tensor_file(path)), path
    raise CheckpointError(
        f"No weights in {directory} (looked for {', '.join(WEIGHT_FILES)}).",
        "Point to the model folder that holds config.json and its weights.",
    )


def _read_sharded(index_path: Path) -> StateDict:
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no weight_map.", "Re-export the sharded checkpoint.")
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        state.update(read_tensor_file(index_path.parent / shard))
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CheckpointError(f"{index_path} lists tensors no shard holds: {absent[:5]}.", "Re-export the checkpoint.")
    return state


def save_tensor_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict atomically: safetensors for ``.safetensors``, else ``torch.save`` (tensors only)."""
    path = Path(path)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        with atomic_file(path) as handle:
            handle.write(save(tensors))
    else:
        with atomic_file(path) as handle:
            torch.save(tensors, handle)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Drop ``prefix`` from the keys that carry it (e.g. HF's ``bert.``); other keys stay."""
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


@dataclass
class LoadReport:
    """What a load did: tensors ``loaded``, parameters left ``initialized`` (new), checkpoint tensors
    ``unused``, and ``notes`` (resizes, defaults)."""

    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: "LoadReport", prefix: str = "") -> None:
        self.loaded += [prefix + key for key in other.loaded]
        self.initialized += [prefix + key for key in other.initialized]
        self.unused += [prefix + key for key in other.unused]
        self.notes += other.notes

    def as_dict(self) -> dict[str, list[str]]:
        return {"loaded": self.loaded, "initialized": self.initialized, "unused": self.unused, "notes": self.notes}

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.initialized:
            lines.append(f"newly initialised ({len(self.initialized)}): {_short(self.initialized)}")
        if self.unused:
            lines.append(f"unused from the checkpoint ({len(self.unused)}): {_short(self.unused)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def load_matching(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | os.PathLike,
    may_initialize: Iterable[str] = (),
) -> LoadReport:
    """Copy the tensors of ``state_dict`` into ``module`` by name.

    Every parameter/persistent buffer of ``module`` must be present with its exact shape, except
    keys containing one of the substrings ``may_initialize`` (left as initialised, reported).
    Extra checkpoint tensors are reported as unused. ``CheckpointError`` (naming ``source``) on a
    shape mismatch or a missing tensor.
    """
    allowed = tuple(may_initialize)
    expected = module.state_dict()
    report = LoadReport()
    matched = {}
    for key, target in expected.items():
        if key not in state_dict:
            if any(part in key for part in allowed):
                report.initialized.append(key)
                continue
            raise CheckpointError(
                f"{source} lacks the tensor {key!r} {tuple(target.shape)}.",
                "Check that this file belongs to this model part, or re-export the checkpoint.",
            )
        tensor = state_dict[key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {tuple(tensor.shape)} but the model built from the "
                f"config expects {tuple(target.shape)}.",
                "Make the config.json beside the weights match them (sizes are read from it).",
            )
        matched[key] = tensor.to(target.dtype)
        report.loaded.append(key)
    report.unused = sorted(set(state_dict) - set(expected))
    module.load_state_dict(matched, strict=False)
    return report
