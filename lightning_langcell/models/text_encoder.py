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

For zero-shot speed the one ``forward`` also takes (all optional, same numbers up to float rounding):
per-layer cross-attention key/value of the cell states computed once (``precompute_cross_kv``) and
reused for every text; a batch of one text (or one cell) broadcast over the other side; and class
texts packed side by side without padding (``text_prefix`` + ``candidates``: their embeddings and
first self-attention computed once, every cell's candidate texts in one row, the feed-forward in
chunks of its width, the last layer on ``[CLS]`` only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.activations import ACT2FN

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.config import TextEncoderConfig

KeyValue = tuple[torch.Tensor, torch.Tensor]  # attention key and value [N, heads, L, H/heads]
CrossKV = Sequence[KeyValue]  # one KeyValue per text layer

TEXT_MASK_VALUE = -10000.0
MODES = ("text", "multimodal")
FFN_CHUNK = 1536  # intermediate columns per feed-forward chunk in packed passes (see TextLayer.feed_forward)


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

    def key_value(self, states: torch.Tensor) -> KeyValue:
        """Key and value [N, heads, L, H/heads] of ``states`` [N, L, kv_width]."""
        return self.split_heads(self.key(states)), self.split_heads(self.value(states))

    def forward(self, hidden_states: torch.Tensor, key_value: KeyValue, mask: torch.Tensor | None) -> torch.Tensor:
        """Attend ``hidden_states`` [N, Lq, H] to ``key_value`` [B, heads, Lk, d]; returns the context
        [max(N, B), Lq, H]. One text (N = 1) meets B cells with its query projected once."""
        query = self.split_heads(self.query(hidden_states))
        key, value = key_value
        if query.shape[0] == 1 and key.shape[0] > 1:
            query = query.expand(key.shape[0], -1, -1, -1)
        return self.attend(query, key, value, mask)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Attention core on split heads [N, heads, L, d] → context [N, Lq, H] (heads merged)."""
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

    def forward(self, hidden_states: torch.Tensor, key_value: KeyValue, mask: torch.Tensor | None) -> torch.Tensor:
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


@dataclass(frozen=True)
class TextPrefix:
    """Cell-independent start of C texts for packed passes: embeddings + layer-0 self-attention.

    ``hidden`` [C, L, H] (padded), ``self_mask`` additive [C, 1, 1, L], ``lengths`` [C] real tokens.
    With a one-layer encoder ``hidden`` holds only the ``[CLS]`` position.
    """

    hidden: torch.Tensor
    self_mask: torch.Tensor
    lengths: torch.Tensor


@dataclass(frozen=True)
class PackedLayout:
    """Where each (cell b, candidate k) text token sits in the packed [N, T] view of a
    :class:`TextPrefix`'s texts.

    ``segments``: (offset, length) of candidate k's text when every cell has the same candidates
    (then N = 1 until the first cross-attention, as nothing before it depends on the cell, and
    each text's self-attention runs on its slice of T, unmasked); else None, N = B, and the
    self-attention core runs on a padded [B·K, L] view (``pad``/``unpad``) under ``self_mask``.
    """

    packed: torch.Tensor  # flat index n·T + offset + j of every real token
    padded: torch.Tensor  # flat index (n·K + k)·L + j of the same tokens
    source: torch.Tensor  # flat index c·L + j into the prefix
    cls: torch.Tensor  # flat packed index of each pair's [CLS], [N·K]
    rows: int  # N
    width: int  # T
    max_length: int  # L
    segments: tuple[tuple[int, int], ...] | None
    self_mask: torch.Tensor | None  # additive [B·K, 1, 1, L] of the padded view (None with segments)

    @classmethod
    def of(cls, prefix: TextPrefix, candidates: torch.Tensor) -> "PackedLayout":
        """Layout of texts ``candidates`` [B, K] (indices into ``prefix``'s C texts)."""
        lengths, max_length = prefix.lengths, prefix.hidden.shape[1]
        segments, self_mask = None, None
        if bool((candidates == candidates[:1]).all()):
            candidates = candidates[:1]
            pair_lengths = lengths[candidates[0]].tolist()
            segments = tuple(zip([sum(pair_lengths[:k]) for k in range(len(pair_lengths))], pair_lengths))
        else:
            self_mask = prefix.self_mask[candidates.reshape(-1)]
        rows, k = candidates.shape
        pair_lengths = lengths[candidates]  # [N, K]
        offsets = torch.cumsum(pair_lengths, dim=1) - pair_lengths
        width = int(pair_lengths.sum(dim=1).max())
        position = torch.arange(max_length, device=candidates.device)
        real = position < pair_lengths[..., None]  # [N, K, L]
        row = torch.arange(rows, device=candidates.device)[:, None, None]
        pair = torch.arange(rows * k, device=candidates.device).view(rows, k, 1)
        return cls(packed=(row * width + offsets[..., None] + position)[real],
                   padded=(pair * max_length + position)[real],
                   source=(candidates[..., None] * max_length + position)[real],
                   cls=(row[..., 0] * width + offsets).reshape(-1), rows=rows, width=width,
                   max_length=max_length, segments=segments, self_mask=self_mask)

    def pack(self, prefix: TextPrefix) -> torch.Tensor:
        """The prefix states of the laid-out texts, packed: [N, T, H]."""
        hidden_size = prefix.hidden.shape[2]
        hidden = prefix.hidden.new_zeros(self.rows * self.width, hidden_size)
        hidden[self.packed] = prefix.hidden.reshape(-1, hidden_size)[self.source]
        return hidden.view(self.rows, self.width, hidden_size)

    def pad(self, states: torch.Tensor) -> torch.Tensor:
        """Packed [N, T, D] → padded [N·K, L, D] (zeros at padding)."""
        pairs = self.cls.numel()
        out = states.new_zeros(pairs * self.max_length, states.shape[-1])
        out[self.padded] = states.reshape(-1, states.shape[-1])[self.packed]
        return out.view(pairs, self.max_length, -1)

    def unpad(self, states: torch.Tensor) -> torch.Tensor:
        """Padded [N·K, L, D] → packed [N, T, D] (zeros at the unused tail)."""
        out = states.new_zeros(self.rows * self.width, states.shape[-1])
        out[self.packed] = states.reshape(-1, states.shape[-1])[self.padded]
        return out.view(self.rows, self.width, -1)

    def cls_states(self, states: torch.Tensor) -> torch.Tensor:
        """The ``[CLS]`` rows [N, K, D] of packed states [N, T, D]."""
        if self.segments is not None:
            return states[:, self.cls]  # the same offsets in every row
        return states.reshape(-1, states.shape[-1])[self.cls].view(states.shape[0], -1, states.shape[-1])


def packed_self_attention(block: AttentionBlock, hidden: torch.Tensor, layout: PackedLayout,
                          cls_only: bool) -> torch.Tensor:
    """Self-attention sub-block of every laid-out text over its own tokens, from packed states
    [N, T, H]: projections packed, the attention core per text slice (``layout.segments``, no
    mask) or on the padded per-text view. Returns [N, T, H], or with ``cls_only`` [N, K, H]."""
    projections = block.self
    key, value = projections.key(hidden), projections.value(hidden)
    residual = layout.cls_states(hidden) if cls_only else hidden
    query = projections.query(residual)
    split = projections.split_heads
    if layout.segments is not None:
        context = torch.empty_like(query)
        for k, (start, length) in enumerate(layout.segments):
            rows = slice(k, k + 1) if cls_only else slice(start, start + length)
            keys = slice(start, start + length)
            context[:, rows] = projections.attend(split(query[:, rows]), split(key[:, keys]),
                                                  split(value[:, keys]), None)
        return block.output(context, residual)
    query = query.reshape(-1, 1, query.shape[-1]) if cls_only else layout.pad(query)
    context = projections.attend(split(query), split(layout.pad(key)), split(layout.pad(value)), layout.self_mask)
    context = context.view(residual.shape) if cls_only else layout.unpad(context)
    return block.output(context, residual)


class TextLayer(nn.Module):
    """Self-attention, then cross-attention to the cells (multimodal only), then the FFN."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.attention = AttentionBlock(config, config.hidden_size)
        self.crossattention = AttentionBlock(config, config.encoder_width)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps, config.hidden_dropout_prob)

    def self_attend(self, hidden: torch.Tensor, mask: torch.Tensor | None, layout: PackedLayout | None = None,
                    cls_only: bool = False) -> torch.Tensor:
        """Self-attention sub-block: padded texts [N, L, H] (``mask``), or packed ones (``layout``).
        ``cls_only``: only the ``[CLS]`` queries (outputs [N, 1, H] padded, [N, K, H] packed)."""
        if layout is not None:
            return packed_self_attention(self.attention, hidden, layout, cls_only)
        queries = hidden[:, :1] if cls_only else hidden
        return self.attention(queries, self.attention.self.key_value(hidden), mask)

    def feed_forward(self, hidden: torch.Tensor, chunked: bool = False) -> torch.Tensor:
        """FFN sub-block ``LayerNorm(W2·act(W1·x + b1) + b2 + x)``. ``chunked`` (inference, no
        autocast): the intermediate width in ``FFN_CHUNK`` columns, each chunk's contribution summed
        (the [N·T, intermediate] activations stay small; same numbers up to float rounding)."""
        up, down = self.intermediate.dense, self.output.dense
        if (not chunked or self.training or torch.is_autocast_enabled(hidden.device.type)
                or up.out_features <= FFN_CHUNK):
            return self.output(self.intermediate(hidden), hidden)
        total = None
        for start in range(0, up.out_features, FFN_CHUNK):
            columns = slice(start, start + FFN_CHUNK)
            inner = self.intermediate.act(F.linear(hidden, up.weight[columns], up.bias[columns]))
            part = F.linear(inner, down.weight[:, columns])
            total = part if total is None else total.add_(part)
        return self.output.LayerNorm(total.add_(down.bias).add_(hidden))

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor | None,
        cross_mask: torch.Tensor | None = None,
        cell_states: torch.Tensor | None = None,
        cross_key: torch.Tensor | None = None,
        cross_value: torch.Tensor | None = None,
        layout: PackedLayout | None = None,
        cls_only: bool = False,
        self_attention: bool = True,
    ) -> torch.Tensor:
        """[N, L, H] → [N', L, H]. Cross-attention runs when ``cell_states`` [B, Lc, W] or
        precomputed ``cross_key``/``cross_value`` [B, heads, Lc, d] are given; N' = max(N, B).

        ``layout``: the texts are packed [N, T, H] (see :class:`PackedLayout`), the FFN chunked;
        ``cls_only``: only ``[CLS]`` leaves the self-attention; ``self_attention=False``: the input
        has been through it already (a :class:`TextPrefix`).
        """
        hidden = hidden_states
        if self_attention:
            hidden = self.self_attend(hidden, self_mask, layout, cls_only)
        if cell_states is not None:
            cross_key, cross_value = self.crossattention.self.key_value(cell_states)
        if cross_key is not None:
            hidden, cross_key, cross_value, cross_mask = _broadcast_batch(hidden, cross_key, cross_value, cross_mask)
            hidden = self.crossattention(hidden, (cross_key, cross_value), cross_mask)
        return self.feed_forward(hidden, chunked=layout is not None)


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

    def precompute_cross_kv(self, encoder_hidden_states: torch.Tensor) -> list[KeyValue]:
        """Per-layer cross-attention key/value of cell states [B, Lc, encoder_width].

        Returns ``num_hidden_layers`` pairs of [B, heads, Lc, H/heads]; pass them as ``cross_kv`` to
        reuse one cell batch for many texts (the projections dominate zero-shot cost).
        """
        return [layer.crossattention.self.key_value(encoder_hidden_states) for layer in self.encoder.layer]

    def text_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextPrefix:
        """The :class:`TextPrefix` of C texts [C, L] (1/0 mask), for ``forward(text_prefix=...)``."""
        hidden = self.embeddings(input_ids)
        self_mask = text_self_attention_mask(attention_mask, hidden.dtype)
        layers = self.encoder.layer
        hidden = layers[0].self_attend(hidden, self_mask, cls_only=len(layers) == 1)
        return TextPrefix(hidden, self_mask, attention_mask.sum(dim=1))

    def _cross_inputs(self, mode, encoder_hidden_states, encoder_attention_mask, cross_kv, dtype, drop_full_mask):
        """(cell states or None, additive cross mask, per-layer (key, value) or (None, None))."""
        layers = self.encoder.layer
        if mode not in MODES:
            raise LangCellInputError(f"Unknown text-encoder mode {mode!r}.", f"Use one of {MODES}.")
        if mode == "text":
            return None, None, [(None, None)] * len(layers)
        if drop_full_mask and encoder_attention_mask is not None and bool(encoder_attention_mask.all()):
            encoder_attention_mask = None  # no padded cell: SDPA without a mask is faster, same numbers
        cross_mask = cell_cross_attention_mask(encoder_attention_mask, dtype)
        if cross_kv is not None:
            if len(cross_kv) != len(layers):
                raise LangCellInputError(
                    f"cross_kv holds {len(cross_kv)} layers, the text encoder has {len(layers)}.",
                    "Build cross_kv with this encoder's precompute_cross_kv().",
                )
            return None, cross_mask, list(cross_kv)
        if encoder_hidden_states is None:
            raise LangCellInputError(
                "mode='multimodal' needs the cell states.",
                "Pass encoder_hidden_states (the cell last_hidden_state) or cross_kv.",
            )
        return encoder_hidden_states, cross_mask, [(None, None)] * len(layers)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: str = "text",
        cross_kv: CrossKV | None = None,
        text_prefix: TextPrefix | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode texts.

        - ``input_ids``, ``attention_mask``: [N, L] token ids and 1/0 mask (None = no padding).
        - ``mode="text"``: self-attention only (cell arguments are ignored).
        - ``mode="multimodal"``: each layer also cross-attends to the cells, given either as
          ``encoder_hidden_states`` [B, Lc, encoder_width] or as ``cross_kv`` from
          ``precompute_cross_kv``; ``encoder_attention_mask`` [B, Lc] 1/0 marks real cell tokens.
          N == B pairs text i with cell i; N == 1 or B == 1 broadcasts.
        - packed texts (inference): ``text_prefix`` (from :meth:`text_prefix`, C texts) and
          ``candidates`` [B, K] instead of ``input_ids``: cell b meets texts ``candidates[b, k]``,
          whose real tokens are packed side by side (no padding); returns their ``[CLS]`` states
          [B, K, H] (the last layer runs for ``[CLS]`` only). In text mode B is 1.
        Returns the last hidden state [max(N, B), L, H] (packed: [B, K, H]).
        """
        layers = self.encoder.layer
        if text_prefix is None:
            hidden = self.embeddings(input_ids)
            self_mask, layout = text_self_attention_mask(attention_mask, hidden.dtype), None
        else:
            layout, self_mask = PackedLayout.of(text_prefix, candidates), None
            if len(layers) == 1:  # the prefix already holds only [CLS]
                rows = candidates[:layout.rows].reshape(-1)
                hidden = text_prefix.hidden[rows].view(layout.rows, candidates.shape[1], -1)
            else:
                hidden = layout.pack(text_prefix)
        cells, cross_mask, kv_pairs = self._cross_inputs(mode, encoder_hidden_states, encoder_attention_mask,
                                                         cross_kv, hidden.dtype, drop_full_mask=layout is not None)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index, (layer, (key, value)) in enumerate(zip(layers, kv_pairs)):
            options = {"layout": layout, "cls_only": layout is not None and index == len(layers) - 1,
                       "self_attention": layout is None or index > 0}
            if recompute:
                hidden = checkpoint(layer, hidden, self_mask, cross_mask, cells, key, value, use_reentrant=False,
                                    **options)
            else:
                hidden = layer(hidden, self_mask, cross_mask, cells, key, value, **options)
        if layout is not None and hidden.shape[0] != candidates.shape[0]:
            hidden = hidden.expand(candidates.shape[0], -1, -1)
        return hidden
