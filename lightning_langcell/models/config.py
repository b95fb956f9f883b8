"""Model configuration: the cell BERT, the BLIP-"med" text BERT and the shared embedding size.

``LangCellConfig`` is plain data, both towers dataclasses (``CellEncoderConfig``,
``TextEncoderConfig``), with one JSON round trip through ``to_dict``/``from_dict`` so it can be
stored beside a checkpoint. Presets: ``"tiny"`` (CPU tests, debug recipes) and ``"langcell"``
(the released model's shape: Geneformer-12L-30M cell encoder, BiomedBERT-base text encoder).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from transformers import BertConfig

from lightning_langcell.errors import LangCellInputError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
CELL_POOLINGS = ("cls", "mean")


@dataclass
class BertShape:
    """The architecture keys both towers share (defaults: BERT-base's). ``from_dict`` takes a dict,
    a ``config.json`` or an HF ``BertConfig`` (other keys, such as ``transformers_version``, are ignored)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise LangCellInputError(
                f"{type(self).__name__}: hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}.",
                "Choose a head count that divides the hidden size.",
            )

    @classmethod
    def from_dict(cls, data: BertConfig | Mapping[str, Any]):
        source = data.to_dict() if isinstance(data, BertConfig) else dict(data)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in source.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CellEncoderConfig(BertShape):
    """Shape of the cell encoder (an HF ``BertModel``); :meth:`bert_config` gives its ``BertConfig``."""

    type_vocab_size: int = 2

    def bert_config(self, attn_implementation: str = "sdpa") -> BertConfig:
        """The HF ``BertConfig`` of the cell encoder, with the chosen attention implementation."""
        return BertConfig(**self.to_dict(), attn_implementation=attn_implementation)


@dataclass
class TextEncoderConfig(BertShape):
    """Shape of the BLIP-"med" text BERT (word + position embeddings, self/cross-attention, FFN).

    ``encoder_width`` is the width of the cell states its cross-attention reads (the cell hidden size).
    """

    vocab_size: int = 30524  # BiomedBERT's 30,522 WordPiece entries + [DEC], [ENC]
    encoder_width: int = 512


@dataclass
class LangCellConfig:
    """Everything needed to build a ``LangCellModel``.

    - ``cell``: ``CellEncoderConfig`` (or its dict, or a ``BertConfig``, converted).
    - ``text``: ``TextEncoderConfig`` (or its dict, converted); its ``encoder_width`` must equal
      the cell width.
    - ``embed_dim``: size of the shared, L2-normalised cell/text embedding (256).
    - ``attn_implementation``: attention of both encoders, ``"sdpa"`` (default) or ``"eager"``.
    - ``mgm_tie_word_embeddings``: the gene-prediction decoder reuses the cell word embeddings
      (as Geneformer/BERT pre-training does; saves vocab x hidden parameters).
    - ``temperature_*``: learnable contrastive temperature, initial value and clamp range.
    - ``gradient_checkpointing``: recompute each layer's activations in the backward pass.
    - ``cell_pooling``: the cell vector fed to ``cell_proj``: ``"cls"`` (the released LangCell
      model) or ``"mean"`` over the gene positions (Geneformer's cell embedding). A model
      trained from scratch learns much faster with ``"mean"``: at initialisation attention is
      nearly uniform and the ``<cls>`` state is almost the same for every cell.
    - ``max_length`` / ``text_max_length``: how the model was trained: cell tokens per cell
      (``<cls>`` included) and text tokens per text. Tasks default to them (None: not recorded;
      :meth:`cell_max_length` / :meth:`text_length` then fall back to the position tables).
    """

    cell: CellEncoderConfig = field(default_factory=CellEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 256
    attn_implementation: str = "sdpa"
    mgm_tie_word_embeddings: bool = True
    temperature_init: float = 0.07
    temperature_min: float = 0.001
    temperature_max: float = 0.5
    gradient_checkpointing: bool = False
    cell_pooling: str = "cls"
    max_length: int | None = None
    text_max_length: int | None = None

    def __post_init__(self) -> None:
        if self.cell_pooling not in CELL_POOLINGS:
            raise LangCellInputError(
                f"Unknown cell_pooling {self.cell_pooling!r}.", f"Use one of {CELL_POOLINGS}."
            )
        if not isinstance(self.cell, CellEncoderConfig):
            self.cell = CellEncoderConfig.from_dict(self.cell)
        if isinstance(self.text, Mapping):
            self.text = TextEncoderConfig.from_dict(self.text)
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise LangCellInputError(
                f"Unknown attn_implementation {self.attn_implementation!r}.",
                f"Use one of {ATTN_IMPLEMENTATIONS}.",
            )
        if self.text.encoder_width != self.cell.hidden_size:
            raise LangCellInputError(
                f"Text cross-attention reads cell states of width {self.text.encoder_width}, but the "
                f"cell encoder's hidden_size is {self.cell.hidden_size}.",
                "Set text.encoder_width to the cell hidden_size.",
            )
        for name, limit in (("max_length", self.cell_positions()),
                            ("text_max_length", self.text.max_position_embeddings)):
            value = getattr(self, name)
            if value is not None and not 2 <= value <= limit:
                raise LangCellInputError(
                    f"{name} {value} is outside [2, {limit}] (the model's position table).",
                    f"Record the length the model was trained with, at most {limit}.",
                )
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise LangCellInputError(
                "Temperature init must lie in [temperature_min, temperature_max] with min > 0.",
                "Fix temperature_init / temperature_min / temperature_max.",
            )

    def cell_max_length(self) -> int:
        """Cell tokens per cell the model was trained with (its position table when not recorded)."""
        return int(self.max_length or self.cell_positions())

    def cell_positions(self) -> int:
        """Rows of the cell encoder's position table: the longest cell it can read."""
        return int(self.cell_bert_config().max_position_embeddings)

    def text_length(self) -> int:
        """Text tokens per text the model was trained with (its position table when not recorded)."""
        return int(self.text_max_length or self.text.max_position_embeddings)

    def cell_bert_config(self) -> BertConfig:
        """The HF ``BertConfig`` of the cell encoder, with the chosen attention implementation."""
        return self.cell.bert_config(self.attn_implementation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (towers as dicts); ``from_dict(to_dict())`` rebuilds an equal config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LangCellConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LangCellInputError(
                f"Unknown LangCellConfig keys {unknown}.", f"Use only {sorted(known)}."
            )
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "LangCellConfig":
        """A named preset; ``overrides`` replace top-level fields, and ``cell=``/``text=`` dicts
        are merged into the preset's (e.g. ``preset("tiny", text={"vocab_size": len(tok)})``)."""
        if name not in PRESETS:
            raise LangCellInputError(f"Unknown model preset {name!r}.", f"Use one of {sorted(PRESETS)}.")
        data = copy.deepcopy(PRESETS[name])
        towers = {"cell": CellEncoderConfig, "text": TextEncoderConfig}
        for key, value in overrides.items():
            if key in towers and isinstance(value, Mapping):
                unknown = sorted(set(value) - {f.name for f in fields(towers[key])})
                if unknown:
                    raise LangCellInputError(f"Unknown {key} encoder keys {unknown}.",
                                             f"Use only {sorted(f.name for f in fields(towers[key]))}.")
                data[key].update(value)
            else:
                data[key] = value
        if "cell" in overrides and "hidden_size" in overrides["cell"] and "encoder_width" not in (
            overrides.get("text") or {}
        ):
            data["text"]["encoder_width"] = data["cell"]["hidden_size"]
        return cls.from_dict(data)


def list_presets() -> list[str]:
    return sorted(PRESETS)


_GENEFORMER_VOCAB = 25427  # <pad>, <mask>, 25,424 genes, <cls> (see tokenization)

# what every Geneformer-style cell encoder preset shares; each preset adds its sizes
_GENEFORMER_CELL: dict[str, Any] = {
    "vocab_size": _GENEFORMER_VOCAB,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
    "max_position_embeddings": 2048,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "cell": {**_GENEFORMER_CELL, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 128},
        "text": {
            "vocab_size": 30524,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "hidden_act": "gelu",
            "max_position_embeddings": 512,
            "encoder_width": 64,
        },
        "embed_dim": 256,
        "cell_pooling": "mean",
    },
    "langcell": {
        "cell": {**_GENEFORMER_CELL, "hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
                 "intermediate_size": 1024},
        "text": {
            "vocab_size": 30524,  # BiomedBERT's 30,522 WordPiece entries + [DEC], [ENC]
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "hidden_act": "gelu",
            "max_position_embeddings": 512,
            "encoder_width": 512,
        },
        "embed_dim": 256,
    },
}
