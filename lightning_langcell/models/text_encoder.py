"""The text encoder: a BERT in BLIP's "med" form, with an optional fusion (cross-attention) pass.

Differences from HF ``BertModel`` (behaviour of the released LangCell text encoder):
- embeddings are word + absolute position + LayerNorm; there are no token-type embeddings;
- every layer runs self-attention, then, in ``mode="multimodal"`` only, cross-attention whose
  key/value project the cell states (width ``encoder_width``) to the text width, then the FFN.

Parameter names equal the released ``text_bert`` state dict (``embeddings.word_embeddings``,
``encoder.layer.{i}.attention.self.query``, ``...crossattention.self.key`` [H, encoder_width], ...),
so released weights load without renaming. Attention runs through
``torch.nn.functional.scaled_dot_product_attention`` (or, ``set_attn_implementation("eager")``,
written out as the released code does) with additive masks: -10000 on padded text
keys (as the released code), ``finfo.min`` on padded cell keys.

For zero-shot speed the cross-attention accepts per-layer key/value of the cell states computed
once (``precompute_cross_kv``), and a batch of one text (or one cell) broadcasts over the other side.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.activations import ACT2FN

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.config import TextEncoderConfig

CrossKV = Sequence[tuple[torch.Tensor, torch.Tensor]]

TEXT_MASK_VALUE = -10000.0
MODES = ("text", "multimodal")


def text_self_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[N, L] 1/0 → additive [N, 1, 1, L] mask with -10000 on padded text keys."""
    if attention_mask is None:
        return None
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * TEXT_MASK_VALUE


def cell_cross_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, Lc] 1/0 → additive [B, 1, 1, Lc] mask with ``finfo(dtype).min`` on padded cell keys."""
    if attention_mask is None:
        return None
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation: N(0, std) weights, zero biases and padding rows, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TextEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm, dropout. Input [N, L] ids → [N, L, H]."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).unsqueeze(0), persistent=False
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise LangCellInputError(
                f"Text of {length} tokens exceeds the {self.position_ids.shape[1]} positions of the text encoder.",
                "Tokenize with truncation=True and max_length <= max_position_embeddings.",
            )
        positions = self.position_embeddings(self.position_ids[:, :length])
        return self.dropout(self.LayerNorm(self.word_embeddings(input_ids) + positions))


def eager_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                    dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q·kᵀ/√d + mask)·v written out, as the released BLIP "med" code computes it
    ([N, heads, Lq, d] × [N, heads, Lk, d] → [N, heads, Lq, d]); the scores are materialised."""
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
    if mask is not None:
        scores = scores + mask
    probs = F.dropout(scores.softmax(dim=-1), dropout_p) if dropout_p else scores.softmax(dim=-1)
    return torch.matmul(probs, value)


class AttentionProjections(nn.Module):
    """Query from the text states [N, L, H]; key/value from ``kv_width``-wide states. Heads of H/heads.

    ``implementation``: ``"sdpa"`` (fused kernel, default) or ``"eager"`` (:func:`eager_attention`).
    """

    def __init__(self, hidden_size: int, kv_width: int, num_heads: int, dropout: float):
        super().__init__()
        self.implementation = "sdpa"
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(kv_width, hidden_size)
        self.value = nn.Linear(kv_width, hidden_size)
        self.dropout_p = dropout

    def split_heads(self, states: torch.Tensor) -> torch.Tensor:
        """[N, L, H] → [N, heads, L, H/heads]."""
        return states.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)

    def key_value(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value [N, heads, L, H/heads] of ``states`` [N, L, kv_width]."""
        return self.split_heads(self.key(states)), self.split_heads(self.value(states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attend ``hidden_states`` [N, Lq, H] to ``key_value`` [B, heads, Lk, d]; returns the context
        [max(N, B), Lq, H]. One text (N = 1) meets B cells with its query projected once."""
        query = self.split_heads(self.query(hidden_states))
        key, value = key_value
        if query.shape[0] == 1 and key.shape[0] > 1:
            query = query.expand(key.shape[0], -1, -1, -1)
        attend = eager_attention if self.implementation == "eager" else _sdpa
        context = attend(query, key, value, mask, self.dropout_p if self.training else 0.0)
        return context.transpose(1, 2).flatten(2)


def _sdpa(query, key, value, mask, dropout_p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)


class AddNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)`` (BERT's post-LN sub-layer output)."""

    def __init__(self, in_features: int, hidden_size: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(states)) + residual)


class AttentionBlock(nn.Module):
    """Multi-head attention (``self``: projections) followed by its ``output`` add & norm."""

    def __init__(self, config: TextEncoderConfig, kv_width: int):
        super().__init__()
        hidden = config.hidden_size
        self.self = AttentionProjections(hidden, kv_width, config.num_attention_heads, config.attention_probs_dropout_prob)
        self.output = AddNorm(hidden, hidden, config.layer_norm_eps, config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.output(self.self(hidden_states, key_value, mask), hidden_states)


class Intermediate(nn.Module):
    """FFN expansion H → intermediate with the configured activation."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.hidden_act = config.hidden_act  # its name, for fused inference kernels
        self.act = ACT2FN[config.hidden_act]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(states))


def _broadcast_batch(
    hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Let one text meet many cells (or one cell many texts): the cells' batch of size 1 expands."""
    n_text, n_cell = hidden.shape[0], key.shape[0]
    if n_text in (n_cell, 1):  # one text: the cross-attention broadcasts its query (projected once)
        return hidden, key, value, mask
    if n_cell == 1:
        expand = (n_text, -1, -1, -1)
        return hidden, key.expand(*expand), value.expand(*expand), None if mask is None else mask.expand(*expand)
    raise LangCellInputError(
        f"{n_text} texts cannot be paired with {n_cell} cells.",
        "Pass as many texts as cells, or a single text (or a single cell) to broadcast.",
    )


class TextLayer(nn.Module):
    """Self-attention, then cross-attention to the cells (multimodal only), then the FFN."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.attention = AttentionBlock(config, config.hidden_size)
        self.crossattention = AttentionBlock(config, config.encoder_width)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps, config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor | None,
        cross_mask: torch.Tensor | None = None,
        cell_states: torch.Tensor | None = None,
        cross_key: torch.Tensor | None = None,
        cross_value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[N, L, H] → [N', L, H]. Cross-attention runs when ``cell_states`` [B, Lc, W] or
        precomputed ``cross_key``/``cross_value`` [B, heads, Lc, d] are given; N' = max(N, B)."""
        hidden = self.attention(hidden_states, self.attention.self.key_value(hidden_states), self_mask)
        if cell_states is not None:
            cross_key, cross_value = self.crossattention.self.key_value(cell_states)
        if cross_key is not None:
            hidden, cross_key, cross_value, cross_mask = _broadcast_batch(hidden, cross_key, cross_value, cross_mask)
            hidden = self.crossattention(hidden, (cross_key, cross_value), cross_mask)
        return self.output(self.intermediate(hidden), hidden)


class TextLayerStack(nn.Module):
    """Holds ``layer`` (a ModuleList) so parameter names read ``encoder.layer.{i}``."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(TextLayer(config) for _ in range(config.num_hidden_layers))


class TextEncoder(nn.Module):
    """BLIP-"med" BERT. ``forward`` returns the last hidden state [N, L, H]."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.encoder = TextLayerStack(config)
        self.gradient_checkpointing = False
        self.apply(partial(init_bert_weights, std=config.initializer_range))

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer in the backward pass (training only) to save activation memory."""
        self.gradient_checkpointing = enabled

    def set_attn_implementation(self, implementation: str) -> None:
        """``"sdpa"`` or ``"eager"`` attention in every self- and cross-attention block."""
        for module in self.modules():
            if isinstance(module, AttentionProjections):
                module.implementation = implementation

    def precompute_cross_kv(self, encoder_hidden_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention key/value of cell states [B, Lc, encoder_width].

        Returns ``num_hidden_layers`` pairs of [B, heads, Lc, H/heads]; pass them as ``cross_kv`` to
        reuse one cell batch for many texts (the projections dominate zero-shot cost).
        """
        return [layer.crossattention.self.key_value(encoder_hidden_states) for layer in self.encoder.layer]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: str = "text",
        cross_kv: CrossKV | None = None,
    ) -> torch.Tensor:
        """Encode texts.

        - ``input_ids``, ``attention_mask``: [N, L] token ids and 1/0 mask (None = no padding).
        - ``mode="text"``: self-attention only (cell arguments are ignored).
        - ``mode="multimodal"``: each layer also cross-attends to the cells, given either as
          ``encoder_hidden_states`` [B, Lc, encoder_width] or as ``cross_kv`` from
          ``precompute_cross_kv``; ``encoder_attention_mask`` [B, Lc] 1/0 marks real cell tokens.
          N == B pairs text i with cell i; N == 1 or B == 1 broadcasts.
        Returns the last hidden state [max(N, B), L, H].
        """
        if mode not in MODES:
            raise LangCellInputError(f"Unknown text-encoder mode {mode!r}.", f"Use one of {MODES}.")
        layers = self.encoder.layer
        hidden = self.embeddings(input_ids)
        self_mask = text_self_attention_mask(attention_mask, hidden.dtype)
        cells, cross_mask, kv_pairs = None, None, [(None, None)] * len(layers)
        if mode == "multimodal":
            cross_mask = cell_cross_attention_mask(encoder_attention_mask, hidden.dtype)
            if cross_kv is not None:
                if len(cross_kv) != len(layers):
                    raise LangCellInputError(
                        f"cross_kv holds {len(cross_kv)} layers, the text encoder has {len(layers)}.",
                        "Build cross_kv with this encoder's precompute_cross_kv().",
                    )
                kv_pairs = list(cross_kv)
            elif encoder_hidden_states is not None:
                cells = encoder_hidden_states
            else:
                raise LangCellInputError(
                    "mode='multimodal' needs the cell states.",
                    "Pass encoder_hidden_states (the cell last_hidden_state) or cross_kv.",
                )
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer, (key, value) in zip(layers, kv_pairs):
            if recompute:
                hidden = checkpoint(layer, hidden, self_mask, cross_mask, cells, key, value, use_reentrant=False)
            else:
                hidden = layer(hidden, self_mask, cross_mask, cells, key, value)
        return hidden
