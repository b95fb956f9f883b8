"""Load the ``LangCellModel`` out of a Lightning ``.ckpt`` written by one of our tasks.

The task keeps its model in ``self.model``, so the weights are the ``state_dict`` keys prefixed
``model.``. The architecture comes from ``checkpoint["langcell_config"]`` (written by
``lightning_langcell.tasks.checkpointing.LangCellCheckpointMixin``), else it is rebuilt from the
task's ``hyper_parameters`` (``model`` preset or dict, ``text_init``) with both vocabulary sizes
read from the weights. The file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

from lightning_langcell.errors import CheckpointError, LangCellInputError
from lightning_langcell.hub.formats import CheckpointFormat
from lightning_langcell.hub.state_dicts import WORD_EMBEDDINGS, LoadReport, load_matching, torch_load
from lightning_langcell.models.config import CellEncoderConfig, LangCellConfig
from lightning_langcell.models.langcell import LangCellModel

logger = logging.getLogger(__name__)

LIGHTNING_SUFFIXES = (".ckpt", ".pt", ".pth")
CKPT_CONFIG_KEY = "langcell_config"
CKPT_FORMAT_KEY = "langcell_format_version"
MODEL_PREFIX = "model."


def read_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` (unless inside ``trusted_pickles()``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.", "Pass an existing .ckpt file.")
    try:
        checkpoint = torch_load(path)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds Python objects that torch.load(weights_only=True) refuses to unpickle "
            f"(unpickling them could run code): {str(error).splitlines()[0]}",
            "If you made this file or trust it, pass trust_pickle=True (convert --trust-pickle).",
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"Cannot read {path} (truncated or not a torch file): {error}",
                              "Re-create or re-download the checkpoint.") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict').",
                              "Pass a .ckpt written by Trainer/ModelCheckpoint of a lightning_langcell task.")
    return checkpoint


def config_from_checkpoint(checkpoint: dict[str, Any], state: dict, path: Path) -> LangCellConfig:
    """The model config stored in, or rebuilt from, a task checkpoint."""
    try:
        if CKPT_CONFIG_KEY in checkpoint:
            return LangCellConfig.from_dict(checkpoint[CKPT_CONFIG_KEY])
        return _config_from_hyper_parameters(checkpoint.get("hyper_parameters") or {}, state, path)
    except (LangCellInputError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} holds an unusable model config: {error}",
                              "Re-save it from a task using LangCellCheckpointMixin.") from error


def _config_from_hyper_parameters(hparams: dict[str, Any], state: dict, path: Path) -> LangCellConfig:
    if "model" not in hparams:
        raise CheckpointError(
            f"{path} has neither '{CKPT_CONFIG_KEY}' nor the task's 'model' hyper-parameter.",
            "Use a checkpoint of a lightning_langcell task (LangCellPretraining ...).",
        )
    spec = hparams["model"]
    data = LangCellConfig.preset(spec).to_dict() if isinstance(spec, str) else dict(spec)
    cell_rows = int(state[f"cell_bert.{WORD_EMBEDDINGS}"].shape[0])
    text_rows = int(state[f"text_bert.{WORD_EMBEDDINGS}"].shape[0])
    data["cell"] = {**dict(data.get("cell") or {}), "vocab_size": cell_rows}
    data["text"] = {**dict(data.get("text") or {}), "vocab_size": text_rows}
    text_init = hparams.get("text_init")
    if text_init:
        if not Path(text_init).is_dir():
            raise CheckpointError(
                f"{path} was built with text_init={text_init!r}, which is not here, and it does not store "
                f"'{CKPT_CONFIG_KEY}'; the text encoder's shape is unknown.",
                "Make the text_init folder available, or re-save the checkpoint from a task with "
                "LangCellCheckpointMixin.",
            )
        from lightning_langcell.hub.bert_init import text_config_from_bert

        width = CellEncoderConfig.from_dict(data["cell"]).hidden_size
        data["text"] = text_config_from_bert(text_init, width, text_rows).to_dict()
    if hparams.get("attn_implementation"):
        data["attn_implementation"] = hparams["attn_implementation"]
    return LangCellConfig.from_dict(data)


def load_lightning_checkpoint(
    path: str | os.PathLike, attn_implementation: str | None = None
) -> tuple[LangCellModel, LoadReport]:
    """The ``LangCellModel`` (eval mode) of a task checkpoint and the load report."""
    path = Path(path)
    checkpoint = read_lightning_checkpoint(path)
    full = checkpoint["state_dict"]
    state = {key[len(MODEL_PREFIX):]: value for key, value in full.items() if key.startswith(MODEL_PREFIX)}
    if not state:
        raise CheckpointError(f"{path} has no '{MODEL_PREFIX}*' weights.",
                              "Pass a checkpoint of a lightning_langcell task (its model lives in .model).")
    config = config_from_checkpoint(checkpoint, state, path)
    if attn_implementation is not None:
        config = LangCellConfig.from_dict({**config.to_dict(), "attn_implementation": attn_implementation})
    model = LangCellModel(config)
    report = load_matching(model, state, path)
    report.unused += sorted(key for key in full if not key.startswith(MODEL_PREFIX))
    if CKPT_CONFIG_KEY not in checkpoint:
        report.notes.append(f"{path}: no '{CKPT_CONFIG_KEY}'; the config was rebuilt from the hyper-parameters.")
    logger.info("Loaded the model of Lightning checkpoint %s:\n%s", path, report)
    return model.eval(), report


def lightning_text_tokenizer(path: Path):
    """The tokenizer named by the task's ``text_tokenizer`` hyper-parameter (None: the bundled one)."""
    from lightning_langcell.text import load_text_tokenizer

    hparams: dict[str, Any] = read_lightning_checkpoint(path).get("hyper_parameters") or {}
    return load_text_tokenizer(hparams.get("text_tokenizer"))


LIGHTNING_FORMAT = CheckpointFormat(
    name="lightning",
    description="a Lightning .ckpt of our tasks",
    detect=lambda path: path.is_file() and path.suffix in LIGHTNING_SUFFIXES,
    load=load_lightning_checkpoint,
    text_tokenizer=lightning_text_tokenizer,
)
