"""Zero-shot scoring engine (pure torch): CTC, CTM and their blend for cells × candidate classes.

Scores (the released recipe, see :mod:`lightning_langcell.models.zero_shot_scores`):

- CTC ``[B, C]`` = ``softmax_c(cell · text_c / temperature)`` (temperature 0.05);
- CTM ``[B, C]`` = per (cell, class) match probability ``softmax(ctm_logits)[..., 1]``, then a
  softmax across the classes;
- final = ``alpha · CTC + (1 − alpha) · CTM`` (alpha 0.1); prediction = argmax. ``alpha = 1``
  skips the matcher entirely.

Exact mode computes the same numbers as the official per-class loop, but:

- the cell states' cross-attention key/value are projected once per cell batch and layer
  (``precompute_cross_kv``) and reused for every class;
- every class text is embedded once (CTC), and its embeddings + first-layer self-attention —
  the only text work that does not depend on the cell — are computed once per scorer;
- all (cell, class) pairs run in one fused pass: the real tokens of a cell's candidate texts
  are packed side by side ``[B, T, H]`` (no padding), so the position-wise work (projections,
  FFN) and the cross-attention to the cell run as one batched call per cell; only the
  self-attention core is computed per text, on its slice of the packed tokens (every cell with
  the same classes, as in exact mode) or in a padded ``[B·K, L, H]`` view (top-k);
- the first layer's cross-attention query is projected once per class, not per pair;
- the FFN runs in two halves of its intermediate width (same numbers up to rounding, faster);
- the last layer runs only for the ``[CLS]`` position (the matcher reads nothing else).

The class texts themselves (CTC) go through the same packed pass without cross-attention.

Top-k mode (``top_k=k``): the matcher runs only on the k classes with the highest CTC
probability of each cell. The class softmax still runs over all C classes, each class the
matcher did not score standing in with the candidates' mean ``exp(match probability)`` (the
softmax numerator): CTM sums to 1 and keeps the scale it has in exact mode, so the CTC/CTM
balance set by alpha is kept. (A softmax over the k candidates alone inflates the CTM
differences roughly C/k-fold; on real PBMCs with a trained checkpoint it agreed with exact mode
on 93% of cells at k=2 against 99% with the stand-in.) The prediction is always a candidate.
``k = C`` gives exactly the exact-mode results; ``k = 1`` needs no matcher pass (every class
then gets CTM 1/C): the prediction is the CTC argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.cpu_linear import ACTIVATIONS, PackedCpuLinear, packed_cpu_linear
from lightning_langcell.inference.cpu_memory import retained_cpu_memory
from lightning_langcell.models.langcell import LangCellModel
from lightning_langcell.models.text_encoder import CrossKV, cell_cross_attention_mask, text_self_attention_mask
from lightning_langcell.models.zero_shot_scores import (
    OFFICIAL_ALPHA,
    OFFICIAL_TEMPERATURE,
    blend,
    ctc_logits,
    ctm_class_probabilities,
    ctm_match_probability,
)


@dataclass(frozen=True)
class ClassTexts:
    """Tokenized class texts ``input_ids``/``attention_mask`` [C, L], their CTC ``embedding`` [C, E]
    and (from :func:`encode_class_texts`) their :class:`TextPrefix`, the matcher's shared start."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    embedding: torch.Tensor
    prefix: TextPrefix | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@torch.no_grad()
def encode_class_texts(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ClassTexts:
    """Embed C class texts once (inference; equal to ``model.encode_texts`` one by one within ~1e-6).

    The texts run packed without padding (:func:`packed_text_pass`, last layer on ``[CLS]`` only),
    and their :class:`TextPrefix` is kept for the matcher.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise LangCellInputError("No class texts to score against.", "Give at least one candidate class.")
    prefix = text_prefix(model, input_ids, attention_mask)
    everything = torch.arange(input_ids.shape[0], device=input_ids.device)[None]
    with retained_cpu_memory(input_ids.device), packed_cpu_linear(input_ids.device):
        cls_hidden = packed_text_pass(model, prefix, everything)[0]
    return ClassTexts(input_ids, attention_mask, model.text_embedding(cls_hidden), prefix)


@dataclass(frozen=True)
class ZeroShotOutput:
    """Scores of B cells against C classes.

    ``cell_embedding`` [B, E]; ``ctc_probs``, ``ctm_probs``, ``final_probs`` [B, C];
    ``match_prob`` [B, C] (NaN where the matcher did not run); ``pred`` [B] int64;
    ``candidates`` [B, K] class indices the matcher ran on (None when it did not run).
    """

    cell_embedding: torch.Tensor
    ctc_probs: torch.Tensor
    match_prob: torch.Tensor
    ctm_probs: torch.Tensor
    final_probs: torch.Tensor
    pred: torch.Tensor
    candidates: torch.Tensor | None


# ------------------------------------------------------------------------------------ scores
def top_k_candidates(ctc_probs: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, k] of each cell's k best CTC classes, in ascending class order."""
    return ctc_probs.topk(min(k, ctc_probs.shape[1]), dim=-1).indices.sort(dim=-1).values


def combine_scores(
    ctc_probs: torch.Tensor, match_prob: torch.Tensor, candidates: torch.Tensor, alpha: float = OFFICIAL_ALPHA
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CTM probabilities [B, C], final probabilities [B, C]) from CTC [B, C] and the match
    probabilities [B, K] of ``candidates`` [B, K]. CTM = softmax over all C classes, the C − K
    classes outside the candidates taking the candidates' mean ``exp(match)`` (see the module
    doc); with K = C it is the exact softmax."""
    n_classes, k = ctc_probs.shape[1], candidates.shape[1]
    if k == n_classes:
        ctm_probs = torch.zeros_like(ctc_probs).scatter_(1, candidates, ctm_class_probabilities(match_prob))
    else:
        stand_in = torch.logsumexp(match_prob, dim=1, keepdim=True) - math.log(k)  # log mean exp(match)
        probs = ctm_class_probabilities(torch.cat([match_prob, stand_in.expand(-1, n_classes - k)], dim=1))
        ctm_probs = probs[:, k:k + 1].expand_as(ctc_probs).scatter(1, candidates, probs[:, :k])
    return ctm_probs, blend(ctc_probs, ctm_probs, alpha)


def candidate_argmax(final_probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Index [B] of the most probable class among each cell's ``candidates`` [B, K]."""
    return candidates.gather(1, final_probs.gather(1, candidates).argmax(dim=1, keepdim=True)).squeeze(1)


# ------------------------------------------------------------------------- fused text pass
FFN_CHUNK = 1536  # intermediate columns per feed-forward chunk in the fused pass (see _feed_forward)


@dataclass(frozen=True)
class TextPrefix:
    """Cell-independent start of the text pass for C texts: embeddings + layer-0 self-attention.

    ``hidden`` [C, L, H] (padded), ``self_mask`` additive [C, 1, 1, L], ``lengths`` [C] real tokens.
    With a one-layer encoder ``hidden`` holds only the ``[CLS]`` position.
    """

    hidden: torch.Tensor
    self_mask: torch.Tensor
    lengths: torch.Tensor


def _self_attention(layer, hidden: torch.Tensor, mask: torch.Tensor, cls_only: bool) -> torch.Tensor:
    """Layer self-attention sub-block on padded texts [N, L, H] → [N, L or 1, H]."""
    queries = hidden[:, :1] if cls_only else hidden
    return layer.attention(queries, layer.attention.self.key_value(hidden), mask)


@torch.no_grad()
def text_prefix(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextPrefix:
    """The :class:`TextPrefix` of class texts [C, L] (1/0 mask)."""
    text_bert = model.text_bert
    hidden = text_bert.embeddings(input_ids)
    self_mask = text_self_attention_mask(attention_mask, hidden.dtype)
    first = text_bert.encoder.layer[0]
    hidden = _self_attention(first, hidden, self_mask, cls_only=len(text_bert.encoder.layer) == 1)
    return TextPrefix(hidden, self_mask, attention_mask.sum(dim=1))


@dataclass(frozen=True)
class _PackedLayout:
    """Where each (cell b, candidate k) text token sits in the packed [N, T] view.

    ``segments``: (offset, length) of candidate k's text when every cell has the same candidates
    (then N = 1 until the first cross-attention, as nothing before it depends on the cell, and
    each text's self-attention runs on a slice of T); else None and the self-attention core runs
    on a padded [B·K, L] view through ``packed``/``padded``.
    """

    packed: torch.Tensor  # flat index b·T + offset + j of every real token
    padded: torch.Tensor  # flat index (b·K + k)·L + j of the same tokens
    source: torch.Tensor  # flat index c·L + j into the class prefix
    cls: torch.Tensor  # flat packed index of each pair's [CLS], [B·K]
    width: int  # T
    segments: tuple[tuple[int, int], ...] | None


def _packed_layout(candidates: torch.Tensor, lengths: torch.Tensor, max_length: int) -> _PackedLayout:
    if bool((candidates == candidates[:1]).all()):
        candidates = candidates[:1]
        pair_lengths = lengths[candidates[0]].tolist()
        offsets = [sum(pair_lengths[:k]) for k in range(len(pair_lengths))]
        segments = tuple(zip(offsets, pair_lengths))
    else:
        segments = None
    n_cells, k = candidates.shape
    pair_lengths = lengths[candidates]  # [B, K]
    offsets = torch.cumsum(pair_lengths, dim=1) - pair_lengths
    width = int(pair_lengths.sum(dim=1).max())
    position = torch.arange(max_length, device=candidates.device)
    real = position < pair_lengths[..., None]  # [B, K, L]
    cell = torch.arange(n_cells, device=candidates.device)[:, None, None]
    pair = torch.arange(n_cells * k, device=candidates.device).view(n_cells, k, 1)
    packed = (cell * width + offsets[..., None] + position)[real]
    padded = (pair * max_length + position)[real]
    source = (candidates[..., None] * max_length + position)[real]
    cls = (cell[..., 0] * width + offsets).reshape(-1)
    return _PackedLayout(packed, padded, source, cls, width, segments)


def _pad(states: torch.Tensor, layout: _PackedLayout, pairs: int, max_length: int) -> torch.Tensor:
    """Packed [B, T, D] → padded [pairs, L, D] (zeros at padding)."""
    out = states.new_zeros(pairs * max_length, states.shape[-1])
    out[layout.padded] = states.reshape(-1, states.shape[-1])[layout.packed]
    return out.view(pairs, max_length, -1)


def _unpad(states: torch.Tensor, layout: _PackedLayout, n_cells: int) -> torch.Tensor:
    """Padded [pairs, L, D] → packed [B, T, D] (zeros at the unused tail)."""
    out = states.new_zeros(n_cells * layout.width, states.shape[-1])
    out[layout.packed] = states.reshape(-1, states.shape[-1])[layout.padded]
    return out.view(n_cells, layout.width, -1)


def _segment_attention(projections, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       segments, cls_only: bool) -> torch.Tensor:
    """Each text's attention core over its own slice of the packed projections [N, T, H], with no
    padding and no mask; ``query`` holds one [CLS] row per text with ``cls_only``."""
    context = torch.empty_like(query)
    for k, (start, length) in enumerate(segments):
        rows = slice(k, k + 1) if cls_only else slice(start, start + length)
        keys = slice(start, start + length)
        out = torch.nn.functional.scaled_dot_product_attention(
            projections.split_heads(query[:, rows]), projections.split_heads(key[:, keys]),
            projections.split_heads(value[:, keys]))
        context[:, rows] = out.transpose(1, 2).flatten(2)
    return context


def _packed_self_attention(layer, hidden: torch.Tensor, layout: _PackedLayout, self_mask: torch.Tensor,
                           max_length: int, cls_only: bool) -> torch.Tensor:
    """Self-attention sub-block of every text over its own tokens, from packed states [N, T, H].

    Projections run packed; the attention core runs per text slice (``layout.segments``) or on the
    padded per-text view. Returns the packed states [N, T, H], or with ``cls_only`` the ``[CLS]``
    states [N, K, H] (K texts per cell).
    """
    projections = layer.attention.self
    key, value = projections.key(hidden), projections.value(hidden)
    if cls_only and layout.segments is not None:
        residual = hidden[:, layout.cls]  # the same offsets in every row
    elif cls_only:
        residual = hidden.reshape(-1, hidden.shape[-1])[layout.cls].view(hidden.shape[0], -1, hidden.shape[-1])
    else:
        residual = hidden
    query = projections.query(residual)
    if layout.segments is not None:
        context = _segment_attention(projections, query, key, value, layout.segments, cls_only)
        return layer.attention.output(context, residual)
    pairs = self_mask.shape[0]
    key, value = (_pad(states, layout, pairs, max_length) for states in (key, value))
    if not cls_only:
        query = _pad(query, layout, pairs, max_length)
    else:
        query = query.reshape(pairs, 1, -1)
    context = torch.nn.functional.scaled_dot_product_attention(
        projections.split_heads(query), projections.split_heads(key), projections.split_heads(value),
        attn_mask=self_mask,
    ).transpose(1, 2).flatten(2)
    if cls_only:
        context = context.view(residual.shape)
    else:
        context = _unpad(context, layout, hidden.shape[0])
    return layer.attention.output(context, residual)


def _feed_forward(layer, hidden: torch.Tensor) -> torch.Tensor:
    """The layer's FFN sub-block, ``LayerNorm(W2·act(W1·x + b1) + b2 + x)``, in eval mode:

    - inside :class:`PackedCpuLinear` (fp32 CPU): W1 and the activation in one oneDNN pass;
    - else without autocast: the intermediate width split into ``FFN_CHUNK`` columns, each chunk's
      contribution summed (~4% faster on CPU: the [N·T, 3072] activations stay small);
    - same numbers up to float rounding either way.
    """
    up, down, intermediate = layer.intermediate.dense, layer.output.dense, layer.intermediate
    packed = PackedCpuLinear.current()
    if layer.training:
        return layer.output(intermediate(hidden), hidden)
    if packed is not None and intermediate.hidden_act in ACTIVATIONS and packed.applies(hidden, up.weight):
        inner = packed.linear(hidden, up.weight, up.bias, intermediate.hidden_act)
        return layer.output.LayerNorm(packed.linear(inner, down.weight, down.bias).add_(hidden))
    if torch.is_autocast_enabled(hidden.device.type) or up.out_features <= FFN_CHUNK:
        return layer.output(intermediate(hidden), hidden)
    total = None
    for start in range(0, up.out_features, FFN_CHUNK):
        columns = slice(start, start + FFN_CHUNK)
        inner = intermediate.act(torch.nn.functional.linear(hidden, up.weight[columns], up.bias[columns]))
        part = torch.nn.functional.linear(inner, down.weight[:, columns])
        total = part if total is None else total.add_(part)
    return layer.output.LayerNorm(total.add_(down.bias).add_(hidden))


def packed_text_pass(
    model: LangCellModel,
    prefix: TextPrefix,
    candidates: torch.Tensor,
    cross_kv: CrossKV | None = None,
    cell_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[CLS]`` states [B, K, H] of text ``candidates[b, k]`` after the whole text encoder.

    With ``cross_kv`` (B cells, from ``model.precompute_cross_kv``) every layer cross-attends to
    cell b (``mode="multimodal"``); without it the pass is the text-only encoding (B = 1). The real
    tokens of a cell's candidate texts are packed side by side, the last layer runs for ``[CLS]``
    only.
    """
    layers = model.text_bert.encoder.layer
    n_cells, k = candidates.shape
    max_length, width = prefix.hidden.shape[1], prefix.hidden.shape[2]
    cross_kv = [None] * len(layers) if cross_kv is None else cross_kv
    if cell_attention_mask is not None and bool(cell_attention_mask.all()):
        cell_attention_mask = None  # no padded cell: SDPA without a mask is faster, same numbers
    cross_mask = cell_cross_attention_mask(cell_attention_mask, prefix.hidden.dtype)
    layout = _packed_layout(candidates, prefix.lengths, max_length)
    rows = 1 if layout.segments is not None else n_cells
    self_mask = None if layout.segments is not None else prefix.self_mask[candidates.reshape(-1)]
    if len(layers) == 1:  # the prefix already holds only [CLS]
        hidden = prefix.hidden[candidates[:rows].reshape(-1)].view(rows, k, width)
    else:
        hidden = prefix.hidden.new_zeros(rows * layout.width, width)
        hidden[layout.packed] = prefix.hidden.reshape(-1, width)[layout.source]
        hidden = hidden.view(rows, layout.width, width)
    for index, (layer, key_value) in enumerate(zip(layers, cross_kv)):
        if index > 0:
            hidden = _packed_self_attention(layer, hidden, layout, self_mask, max_length,
                                            cls_only=index == len(layers) - 1)
        if key_value is not None:
            hidden = layer.crossattention(hidden, key_value, cross_mask)  # a one-row hidden broadcasts
        hidden = _feed_forward(layer, hidden)
    return hidden.expand(n_cells, -1, -1) if hidden.shape[0] != n_cells else hidden


def fused_match_logits(
    model: LangCellModel,
    prefix: TextPrefix,
    cross_kv: CrossKV,
    cell_attention_mask: torch.Tensor | None,
    candidates: torch.Tensor,
) -> torch.Tensor:
    """Matcher logits [B, K, 2] of cell b with class ``candidates[b, k]``.

    ``prefix`` from :func:`text_prefix` (C class texts), ``cross_kv`` from
    ``model.precompute_cross_kv(cell_hidden)`` (B cells), ``cell_attention_mask`` [B, Lc] 1/0.
    Same numbers as one multimodal pass per pair (the official loop) up to float rounding.
    """
    return model.ctm_head(packed_text_pass(model, prefix, candidates, cross_kv, cell_attention_mask))


@torch.no_grad()
def per_class_match_logits(
    model: LangCellModel,
    text_input_ids: torch.Tensor,
    text_attention_mask: torch.Tensor,
    cell_hidden: torch.Tensor,
    cell_attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """The official algorithm, as a slow reference: [B, C, 2].

    For each class: its unpadded text repeated for every cell, one full multimodal pass with
    the cross-attention key/value of the cells recomputed.
    """
    n_cells, columns = cell_hidden.shape[0], []
    for ids, mask in zip(text_input_ids, text_attention_mask):
        text = ids[: int(mask.sum())].expand(n_cells, -1)
        columns.append(model.match_logits(text, torch.ones_like(text), cell_hidden, cell_attention_mask))
    return torch.stack(columns, dim=1)


# -------------------------------------------------------------------------------- scorer
def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in fp32 when it is bf16/fp16 (wider dtypes unchanged)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class ZeroShotScorer:
    """Scores batches of cells against fixed class texts.

    Under autocast (e.g. bf16-mixed) the encoders and the matcher run in reduced precision, but
    the scores (CTC logits, matcher softmaxes, blend) in fp32: probabilities rounded to bf16's
    8-bit mantissa would tie close classes (argmax then picks the first).

    Args:
        model: a :class:`LangCellModel` (put in eval mode here).
        classes: :class:`ClassTexts` from :func:`encode_class_texts`.
        alpha: weight of CTC in the blend (0.1 official; 1.0 skips the matcher).
        top_k: run the matcher on each cell's k best CTC classes only (None: all, exact mode).
        temperature: CTC temperature (0.05 official).
        class_chunk_size: candidate classes per fused matcher pass (bounds memory).
        packed_linear: on CPU in fp32, run the linear layers through oneDNN with weights packed
            once (:class:`~lightning_langcell.inference.cpu_linear.PackedCpuLinear`: ~10% faster
            on AVX-512 CPUs, same numbers up to float rounding, one extra copy of the weights in
            memory); None (default) uses it where the CPU has AVX-512, True / False force it.
        retain_memory: on CPU, keep freed memory in the process while scoring
            (:func:`~lightning_langcell.inference.cpu_memory.retained_cpu_memory`: ~15% faster).
    """

    def __init__(self, model: LangCellModel, classes: ClassTexts, alpha: float = OFFICIAL_ALPHA,
                 top_k: int | None = None, temperature: float = OFFICIAL_TEMPERATURE,
                 class_chunk_size: int = 32, packed_linear: bool | None = None, retain_memory: bool = True):
        if not 0.0 <= alpha <= 1.0:
            raise LangCellInputError(f"alpha must lie in [0, 1], got {alpha}.", "Use e.g. alpha=0.1 (official).")
        if top_k is not None and top_k < 1:
            raise LangCellInputError(f"top_k must be a positive integer or None, got {top_k}.",
                                     "Use e.g. top_k=3, or None for the exact scores.")
        if temperature <= 0 or class_chunk_size < 1:
            raise LangCellInputError("temperature and class_chunk_size must be positive.",
                                     "Use temperature=0.05 and e.g. class_chunk_size=32.")
        self.model = model.eval()
        self.classes = classes
        self.alpha = float(alpha)
        self.top_k = top_k
        self.temperature = float(temperature)
        self.class_chunk_size = int(class_chunk_size)
        self.uses_matcher = self.alpha < 1.0
        self.packed_linear = packed_linear
        self.retain_memory = bool(retain_memory)
        self.prefix = None
        if self.uses_matcher:
            self.prefix = classes.prefix
            if self.prefix is None:  # ClassTexts built by hand
                self.prefix = text_prefix(model, classes.input_ids, classes.attention_mask)

    def match_probability(self, cell_hidden: torch.Tensor, cell_attention_mask: torch.Tensor | None,
                          candidates: torch.Tensor) -> torch.Tensor:
        """Match probabilities [B, K] of each cell with its candidate classes [B, K]."""
        cross_kv = self.model.precompute_cross_kv(cell_hidden)
        chunks = [
            fused_match_logits(self.model, self.prefix, cross_kv, cell_attention_mask, part)
            for part in candidates.split(self.class_chunk_size, dim=1)
        ]
        return ctm_match_probability(at_least_fp32(torch.cat(chunks, dim=1)))

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ZeroShotOutput:
        """Score cells [B, Lc] (``<cls>`` first, 1/0 mask)."""
        device = input_ids.device
        with retained_cpu_memory(device, self.retain_memory), packed_cpu_linear(device, self.packed_linear):
            return self._score(input_ids, attention_mask)

    def _score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ZeroShotOutput:
        cell_hidden, cell_embedding = self.model.encode_cells(input_ids, attention_mask)
        with torch.autocast(cell_embedding.device.type, enabled=False):  # scores in fp32 (see the class doc)
            embedding = at_least_fp32(cell_embedding)
            logits = ctc_logits(embedding, self.classes.embedding.to(embedding.dtype), self.temperature)
        ctc_probs = logits.softmax(dim=-1)
        n_cells, n_classes = ctc_probs.shape
        match_prob = torch.full_like(ctc_probs, float("nan"))
        if not self.uses_matcher:
            ctm_probs = torch.zeros_like(ctc_probs)
            return ZeroShotOutput(cell_embedding, ctc_probs, match_prob, ctm_probs, ctc_probs,
                                  ctc_probs.argmax(dim=-1), None)
        if self.top_k is None:
            candidates = torch.arange(n_classes, device=ctc_probs.device).expand(n_cells, -1)
        else:
            candidates = top_k_candidates(ctc_probs, self.top_k)
        if candidates.shape[1] > 1:
            candidate_match = self.match_probability(cell_hidden, attention_mask, candidates)
            match_prob.scatter_(1, candidates, candidate_match)
        else:  # one candidate: every class gets CTM 1/C whatever the matcher says: skip it
            candidate_match = torch.zeros(candidates.shape, dtype=ctc_probs.dtype, device=ctc_probs.device)
        ctm_probs, final = combine_scores(ctc_probs, candidate_match, candidates, self.alpha)
        return ZeroShotOutput(cell_embedding, ctc_probs, match_prob, ctm_probs, final,
                              candidate_argmax(final, candidates), candidates)
