"""Few-shot LangCell: fine-tune both encoders on k cells per class against the class texts.

Per training batch of B cells and the C class texts (``"cell type: X. definition; "``):

- CTC loss: cross-entropy over classes of ``cell_embedding · text_embedding_c / temperature``
  (temperature fixed at 0.05, as in the released zero-shot code);
- CTM loss: the fusion matcher scores every (cell, class text) pair; the match probability
  ``softmax(ctm_logits)[..., 1]`` of each class is used as the class logit of a cross-entropy,
  i.e. the negative log of the zero-shot CTM class probability (softmax of the match
  probabilities across classes) of the true class.

Prediction (val/test/predict) is the zero-shot blend ``alpha · CTC + (1 − alpha) · CTM`` on the
fine-tuned model, computed by the zero-shot engine
(:class:`lightning_langcell.inference.zero_shot.ZeroShotScorer`: class texts embedded once per
evaluation epoch, fused matcher passes). Training uses the differentiable per-class passes of
:func:`class_match_logits`; both give the same numbers.

After training, :func:`parameter_movement` compares the trained parameters with a sample of
their starting values: below :data:`STILL_MOVEMENT` (relative) the run warns that the learning
rate left the model where it started (its predictions are then the zero-shot ones).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence, Unpack

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models import zero_shot_scores
from lightning_langcell.models.zero_shot_scores import OFFICIAL_ALPHA, OFFICIAL_TEMPERATURE
from lightning_langcell.tasks.base import AdamWSchedule, build_model, freeze_modules
from lightning_langcell.tasks.classify import CellClassificationTask, masked_cross_entropy

LOSSES = ("ctc", "ctm")
STILL_MOVEMENT = 1e-6  # relative parameter change below which training did not move the model
SAMPLED_VALUES = 4096  # starting values kept per parameter tensor to measure the movement


def parameter_sample(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the first :data:`SAMPLED_VALUES` values of each trainable parameter."""
    return {name: p.detach().flatten()[:SAMPLED_VALUES].clone() for name, p in module.named_parameters()
            if p.requires_grad}


def parameter_movement(module: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    """``‖now − start‖ / ‖start‖`` over the sampled values of :func:`parameter_sample`."""
    now = parameter_sample(module)
    moved = sum(float((now[name].float() - value.float()).pow(2).sum()) for name, value in start.items())
    size = sum(float(value.float().pow(2).sum()) for value in start.values())
    return (moved / max(size, 1e-30)) ** 0.5


def class_match_logits(model, cell_hidden: torch.Tensor, cell_attention_mask: torch.Tensor,
                       text_input_ids: torch.Tensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
    """Matcher logits [B, C, 2] of every cell (states [B, Lc, Hc]) with every class text [C, Lt].

    The cells' cross-attention keys/values are computed once and reused for the C texts; each
    text is broadcast over the B cells (one fusion pass per class, as the released code does).
    """
    cross_kv = model.precompute_cross_kv(cell_hidden)
    per_class = [
        model.match_logits(text_input_ids[c : c + 1], text_attention_mask[c : c + 1], None,
                           cell_attention_mask, cross_kv)
        for c in range(text_input_ids.shape[0])
    ]
    return torch.stack(per_class, dim=1)


@dataclass(frozen=True)
class FewShotScores:
    """Scores of B cells against C classes, each [B, C].

    ``ctc_logits``: logits of the CTC softmax (similarity / temperature in training; the
    log-probabilities, equal up to a per-cell constant, in evaluation); ``match_prob``: matcher
    probability of each (cell, class) pair; ``final_probs``: the blended class probabilities.
    """

    ctc_logits: torch.Tensor
    match_prob: torch.Tensor
    final_probs: torch.Tensor


def check_distinct_class_texts(classes: Sequence[str], texts: Sequence[str]) -> None:
    """Raise when two classes share one text: cell–text scores could never tell them apart."""
    by_text: dict[str, list[str]] = defaultdict(list)
    for name, text in zip(classes, texts):
        by_text[text].append(name)
    shared = [names for names in by_text.values() if len(names) > 1]
    if shared:
        raise LangCellInputError(
            f"Classes with identical class texts cannot be told apart by text: {shared}.",
            "Give them distinct texts with data.type2text (a JSON label → text map), or merge those labels.",
        )


class FewShotLangCell(CellClassificationTask):
    """Few-shot fine-tuning of the whole LangCell model (official recipe: Adam lr 1e-5, 10 epochs, batch 12).

    Args:
        model: preset name or ``LangCellConfig`` dict (ignored with ``init_from``).
        text_tokenizer: text tokenizer of the class texts (a local folder or a registered name);
            ``None``: the one that goes with ``init_from`` (the bundled vocabulary without it).
        init_from: checkpoint to start from (official LangCell folder, our ``.ckpt``/format).
        alpha: weight of the CTC probabilities in the prediction blend (official 0.1).
        temperature: divisor of the cosine similarities, in the loss and the prediction (0.05).
        loss_weights: weights of ``ctc`` and ``ctm`` (0 switches a loss off; ``ctm: 0`` skips
            the fusion passes in training).
        freeze: submodules kept fixed, e.g. ``[text_bert]``; the gene head and the learnable
            temperature are always frozen (unused here).
        attn_implementation, gradient_checkpointing: see :func:`build_model`.
        schedule: the :class:`~lightning_langcell.tasks.base.AdamWSchedule` keys; by default
            constant-rate Adam at 1e-5 (no weight decay, no warm-up, no decay).
    """

    schedule_defaults: AdamWSchedule = {**CellClassificationTask.schedule_defaults, "learning_rate": 1e-5,
                                        "weight_decay": 0.0, "warmup_steps": 0, "min_lr_ratio": 1.0}
    uses_class_texts = True

    def __init__(
        self,
        model: str | dict[str, Any] = "tiny",
        text_tokenizer: str | None = None,
        init_from: str | None = None,
        alpha: float = OFFICIAL_ALPHA,
        temperature: float = OFFICIAL_TEMPERATURE,
        loss_weights: dict[str, float] | None = None,
        freeze: Sequence[str] = (),
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        **schedule: Unpack[AdamWSchedule],
    ):
        super().__init__(**schedule)  # saves the hyperparameters
        unknown = set(loss_weights or {}) - set(LOSSES)
        if unknown:
            raise LangCellInputError(f"Unknown loss names {sorted(unknown)}.", f"Use {list(LOSSES)}.")
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise LangCellInputError(
                f"alpha must lie in [0, 1] and temperature be > 0 (got {alpha}, {temperature}).",
                "Use e.g. alpha=0.1, temperature=0.05 (the released values).",
            )
        self.loss_weights = {**dict.fromkeys(LOSSES, 1.0), **(loss_weights or {})}
        if not any(weight > 0 for weight in self.loss_weights.values()):
            raise LangCellInputError("Every loss weight is 0: nothing to train.", "Give ctc or ctm a weight > 0.")
        self.alpha, self.temperature = alpha, temperature
        self.model = build_model(model, text_tokenizer, None, init_from, attn_implementation, gradient_checkpointing)
        freeze_modules(self.model, ["mgm_head", *freeze])
        self.model.temp.requires_grad_(False)
        self.class_text_tokens: dict[str, torch.Tensor] = {}
        self._scorer = None  # the zero-shot engine of the current evaluation epoch
        self._start_sample: dict[str, torch.Tensor] = {}
        self.movement: float | None = None  # relative parameter change of the last fit

    def configure_classes(self, classes: Sequence[str], class_texts: Sequence[str]) -> None:
        """Tokenize the class texts (one per class, in class order; ``[C, L]`` padded)."""
        if len(class_texts) != len(classes):
            raise LangCellInputError(
                f"{len(classes)} classes but {len(class_texts)} class texts.",
                "Pass one text per class (LangCellDataModule.class_texts()).",
            )
        check_distinct_class_texts(classes, class_texts)
        from lightning_langcell.inference.annotate import tokenize_class_texts

        self.class_text_tokens = tokenize_class_texts(list(class_texts), self.text_tokenizer(), self.model)

    def text_tokenizer(self):
        """The tokenizer of the class texts: ``text_tokenizer``, else the one of ``init_from``."""
        from lightning_langcell.text import load_text_tokenizer

        path, init_from = self.hparams.text_tokenizer, self.hparams.init_from
        if path is None and init_from is not None:
            from lightning_langcell.hub.loading import load_text_tokenizer_for

            return load_text_tokenizer_for(init_from)
        return load_text_tokenizer(path)

    def _class_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.class_text_tokens
        if not tokens:
            raise LangCellInputError(
                "The class texts are not set.",
                "Call set_classes(classes, class_texts) first, or run it through a Trainer with a LangCellDataModule.",
            )
        return tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)

    def _zero_shot_scorer(self):
        """The zero-shot engine on the model as it is now (class texts embedded once)."""
        from lightning_langcell.inference.zero_shot import ZeroShotScorer, encode_class_texts

        texts = encode_class_texts(self.model, *self._class_tokens())
        return ZeroShotScorer(self.model, texts, alpha=self.alpha, temperature=self.temperature)

    def forward(self, batch: dict[str, torch.Tensor]) -> FewShotScores:
        """Scores of the batch's cells against the classes: differentiable in training (or with
        gradients on), else from the zero-shot engine (the model must then be in eval mode)."""
        cells, mask = batch["input_ids"], batch["attention_mask"]
        if self.training or torch.is_grad_enabled():
            text_ids, text_mask = self._class_tokens()
            hidden, cell_embedding = self.model.encode_cells(cells, mask)
            _, text_embedding = self.model.encode_texts(text_ids, text_mask)
            if self.loss_weights["ctm"] == 0:
                ctm = torch.zeros(cells.shape[0], text_ids.shape[0], 2, device=cells.device)
            else:
                ctm = class_match_logits(self.model, hidden, mask, text_ids, text_mask)
            scores = zero_shot_scores(cell_embedding, text_embedding, ctm, self.temperature, self.alpha)
            return FewShotScores(scores.ctc_logits, scores.ctm_match_prob, scores.final_probs)
        out = (self._scorer or self._zero_shot_scorer())(cells, mask)
        return FewShotScores(out.ctc_probs.log(), out.match_prob, out.final_probs)

    def losses(self, outputs: FewShotScores, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"ctc": outputs.ctc_logits, "ctm": outputs.match_prob}
        return {
            name: self.loss_weights[name] * masked_cross_entropy(logits, labels)
            for name, logits in terms.items()
            if self.loss_weights[name] > 0
        }

    def scores(self, outputs: FewShotScores) -> torch.Tensor:
        """Blended class probabilities [B, C]."""
        return outputs.final_probs

    def on_train_start(self) -> None:
        self._start_sample = parameter_sample(self)

    def on_train_end(self) -> None:
        """Warn when training left the parameters where they started (e.g. learning rate 0 or far too small)."""
        if not self._start_sample:
            return
        self.movement = parameter_movement(self, self._start_sample)
        self._start_sample = {}
        if self.movement < STILL_MOVEMENT:
            rank_zero_warn(
                f"Few-shot training left the model where it started: after {self.global_step} step(s) at "
                f"learning rate {self.learning_rate:g} its parameters moved by {self.movement:.1e} (relative, "
                f"< {STILL_MOVEMENT:g}), so its predictions are the zero-shot ones. Raise "
                "model.init_args.learning_rate (the recipe's 1e-5 moves it) or train more steps (trainer.max_epochs).")

    # the model is fixed during an evaluation epoch: embed the class texts once per epoch
    def on_validation_epoch_start(self) -> None:
        self._scorer = self._zero_shot_scorer()

    def on_validation_epoch_end(self) -> None:
        self._scorer = None
        super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._scorer = self._zero_shot_scorer()

    def on_test_epoch_end(self) -> None:
        self._scorer = None
        super().on_test_epoch_end()

    def on_predict_epoch_start(self) -> None:
        self._scorer = self._zero_shot_scorer()

    def on_predict_epoch_end(self) -> None:
        self._scorer = None
