"""Shared plumbing of every LightningModule: building the model, freezing, AdamW + schedule."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence, TypedDict, Unpack

import numpy as np
import lightning.pytorch as pl
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.tasks.checkpointing import LangCellCheckpointMixin
from lightning_langcell.tasks.packed_batches import check_packed_batches

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "temp")


def model_config(model: str | dict[str, Any], text_vocab_size: int) -> LangCellConfig:
    """The config of ``model``: a preset name, a full config dict, or ``{"preset": name, "cell":
    {...}, "text": {...}}`` (the preset with those fields replaced, e.g. ``{"preset": "langcell",
    "cell": {"attention_probs_dropout_prob": 0.0}}``). The text vocabulary size defaults to the
    tokenizer's."""
    if isinstance(model, str):
        return LangCellConfig.preset(model, text={"vocab_size": text_vocab_size})
    data = dict(model)
    data["text"] = {"vocab_size": text_vocab_size, **dict(data.get("text") or {})}
    if "preset" in data:
        return LangCellConfig.preset(str(data.pop("preset")), **data)
    return LangCellConfig.from_dict(data)


def build_model(
    model: str | dict[str, Any] = "tiny",
    text_tokenizer: str | None = None,
    text_init: str | None = None,
    init_from: str | None = None,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
) -> LangCellModel:
    """A :class:`LangCellModel` from a preset name or config dict (:func:`model_config`).

    ``text_tokenizer`` fixes the text vocabulary size; ``text_init`` starts the text encoder
    from a local HF BERT folder; ``init_from`` loads weights from a checkpoint (Lightning
    ``.ckpt`` of our recipes, our format, or the official LangCell layout).
    """
    if init_from is not None:
        from lightning_langcell.hub.loading import load_model

        built = load_model(init_from).train()  # the loader returns eval mode; a task trains it
    else:
        from lightning_langcell.text import load_text_tokenizer

        vocab = len(load_text_tokenizer(text_tokenizer))
        config = model_config(model, vocab)
        if text_init is not None:
            from lightning_langcell.hub.bert_init import load_bert_into_text_encoder, text_config_from_bert

            config.text = text_config_from_bert(text_init, config.cell.hidden_size, vocab)
            built = LangCellModel(config)
            load_bert_into_text_encoder(built.text_bert, text_init)  # logs its LoadReport
        else:
            built = LangCellModel(config)
    if attn_implementation is not None:
        built.set_attn_implementation(attn_implementation)
    if gradient_checkpointing:
        built.set_gradient_checkpointing(True)
    return built


def freeze_modules(model: torch.nn.Module, names: Sequence[str]) -> None:
    """Turn off gradients of the named submodules or parameters (``cell_bert``, ``temp``, ...)."""
    for name in names:
        try:
            parameters = list(model.get_submodule(name).parameters())
        except AttributeError:
            try:
                parameters = [model.get_parameter(name)]
            except AttributeError:
                children = [n for n, _ in model.named_children()]
                raise LangCellInputError(
                    f"Cannot freeze {name!r}: no such submodule or parameter.",
                    f"Use a dotted path under {children} or 'temp'.",
                ) from None
        for parameter in parameters:
            parameter.requires_grad_(False)


def use_trained_lengths(datamodule: Any, config: LangCellConfig) -> int:
    """The cell length to feed the model: the data module's ``max_length``, or, when the user left
    it unset (None), the one the checkpoint was trained with (written into the data module)."""
    hparams = getattr(datamodule, "hparams", None)
    if hparams is None or "max_length" not in hparams:
        return config.cell_max_length()
    if hparams.max_length is None:
        hparams.max_length = config.cell_max_length()
    limit = config.cell_positions()
    if hparams.max_length > limit:
        raise LangCellInputError(
            f"data.max_length {hparams.max_length} exceeds the model's {limit} cell positions.",
            f"Use data.max_length <= {limit}, or null for the length the checkpoint was trained with "
            f"({config.cell_max_length()}).",
        )
    return int(hparams.max_length)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class AdamWSchedule(TypedDict, total=False):
    """AdamW and its learning-rate schedule: the ``model.init_args`` keys every training task takes.

    A key left out takes the task's ``schedule_defaults``.

    Args:
        learning_rate: peak learning rate.
        weight_decay: AdamW weight decay (not on biases, LayerNorms and the temperature).
        warmup_steps: steps of linear warm-up, followed by cosine decay.
        min_lr_ratio: learning rate at the last step, as a fraction of ``learning_rate``
            (``warmup_steps=0, min_lr_ratio=1, weight_decay=0`` gives plain constant-rate Adam).
        betas: Adam's betas.
    """

    learning_rate: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    betas: tuple[float, float]


class LangCellTask(LangCellCheckpointMixin, pl.LightningModule):
    """Base LightningModule: AdamW (no decay on biases, LayerNorms, temperature), warm-up + cosine.

    Takes the :class:`AdamWSchedule` keys; each task declares its defaults in ``schedule_defaults``.
    Saves the hyperparameters of the whole ``__init__`` chain (the subclass's arguments and the
    resolved schedule), so a checkpoint reloads with the same settings.

    ``deterministic_steps`` (default on) reseeds torch's global RNG (dropout) before every
    training step from (``seed_everything`` seed, global step, rank): Lightning does not restore
    that RNG, so without it a run resumed from a checkpoint draws other dropout masks.
    """

    deterministic_steps: bool = True
    schedule_defaults: AdamWSchedule = {
        "learning_rate": 1e-4, "weight_decay": 0.01, "warmup_steps": 100, "min_lr_ratio": 0.1, "betas": (0.9, 0.98),
    }
    #: whether the task reads packed cell batches (``data.packed``); others are refused at setup
    accepts_packed_batches: bool = False

    def __init__(self, **schedule: Unpack[AdamWSchedule]):
        super().__init__()
        unknown = sorted(set(schedule) - set(AdamWSchedule.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {unknown}.")
        schedule = {**self.schedule_defaults, **schedule}  # (what save_hyperparameters records)
        self.save_hyperparameters()
        # LightningCLI hands over the keys it was given: add the defaulted ones
        self.save_hyperparameters({key: value for key, value in schedule.items() if key not in self.hparams})
        self.learning_rate = schedule["learning_rate"]
        self.weight_decay = schedule["weight_decay"]
        self.warmup_steps = schedule["warmup_steps"]
        self.min_lr_ratio = schedule["min_lr_ratio"]
        self.betas = tuple(schedule["betas"])

    def trained_config(self) -> LangCellConfig | None:
        """Config of the LangCell model this task trains (None: no LangCell model)."""
        model = getattr(self, "model", None)
        return model.config if isinstance(model, LangCellModel) else None

    def setup(self, stage: str) -> None:
        """Unset data lengths come from the checkpoint; a fit records the lengths it trains with
        in the model's config (saved with every checkpoint, so later tasks default to them)."""
        config = self.trained_config()
        datamodule = getattr(self.trainer, "datamodule", None)
        check_packed_batches(self, datamodule)
        if config is None or datamodule is None:
            return
        max_length = use_trained_lengths(datamodule, config)
        if stage == "fit" and isinstance(getattr(self, "model", None), LangCellModel):
            config.max_length = max_length
            if getattr(datamodule, "hparams", {}).get("texts"):
                config.text_max_length = int(datamodule.hparams.text_max_length)

    def on_fit_start(self) -> None:
        """Train mode for every trained part, whatever mode the checkpoint loader returned: Lightning
        keeps each submodule's mode, so an eval-mode model would train with dropout off."""
        self.train()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.deterministic_steps:
            base = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
            state = np.random.SeedSequence([base, self.global_step, self.global_rank]).generate_state(1, np.uint64)
            torch.manual_seed(int(state[0]))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Norm clipping also under FSDP (Lightning's FSDP precision plugin refuses it): the
        sharded model computes the global norm itself."""
        from lightning.pytorch.strategies import FSDPStrategy

        sharded = isinstance(self.trainer.strategy, FSDPStrategy)
        if gradient_clip_val and sharded and gradient_clip_algorithm in (None, "norm"):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                (no_decay if any(key in name for key in NO_DECAY) else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.learning_rate,
            betas=self.betas,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.warmup_steps, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
