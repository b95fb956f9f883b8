"""Zero-shot scoring engine (pure torch): CTC, CTM and their blend for cells × candidate classes.

Scores (the released recipe, see :mod:`lightning_langcell.models.zero_shot_scores`):

- CTC ``[B, C]`` = ``softmax_c(cell · text_c / temperature)`` (temperature 0.05);
- CTM ``[B, C]`` = per (cell, class) match probability ``softmax(ctm_logits)[..., 1]``, then a
  softmax across the classes;
- final = ``alpha · CTC + (1 − alpha) · CTM`` (alpha 0.1); prediction = argmax. ``alpha = 1``
  skips the matcher entirely.

Exact mode computes the same numbers as the official per-class loop, but through the text
encoder's inference options (:mod:`lightning_langcell.models.text_encoder`; this module only calls
the model):

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
- the FFN runs in chunks of its intermediate width (same numbers up to rounding, faster);
- the last layer runs only for the ``[CLS]`` position (the matcher reads nothing else).

The class texts themselves (CTC) go through the same packed pass without cross-attention.

Top-k mode (``top_k=k``): the matcher runs only on the k classes with the highest CTC
probability of each cell. The class softmax still runs over all C classes, each class the
matcher did not score standing in with the candidates' mean ``exp(match probability)`` (the
softmax numerator): CTM sums to 1 and keeps the scale it has in exact mode, so the CTC/CTM
balance set by alpha is kept (a softmax over the k candidates alone would inflate the CTM
differences roughly C/k-fold). The prediction is always a candidate.
``k = C`` gives exactly the exact-mode results; ``k = 1`` needs no matcher pass (every class
then gets CTM 1/C): the prediction is the CTC argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.langcell import LangCellModel
from lightning_langcell.models.text_encoder import CrossKV, TextPrefix
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


def trimmed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded texts [C, L] cut to their longest real length (less padding for a subset of texts)."""
    length = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :length], attention_mask[:, :length]


@torch.no_grad()
def encode_class_texts(model: LangCellModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       chunk_size: int | None = None) -> ClassTexts:
    """Embed C class texts once (inference; equal to ``model.encode_texts`` one by one within ~1e-6).

    The texts run packed without padding (the text encoder's ``text_prefix``/``candidates``
    options, last layer on ``[CLS]`` only), and their :class:`TextPrefix` is kept for the matcher.
    ``chunk_size``: encode at most this many texts at once (bounded memory for thousands of
    classes); with more texts than that no prefix is kept (:class:`ZeroShotScorer` builds it).
    """
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise LangCellInputError("No class texts to score against.", "Give at least one candidate class.")
    if chunk_size is not None and input_ids.shape[0] > chunk_size:
        parts = [encode_class_texts(model, *trimmed(ids, mask)).embedding
                 for ids, mask in zip(input_ids.split(chunk_size), attention_mask.split(chunk_size))]
        return ClassTexts(input_ids, attention_mask, torch.cat(parts))
    prefix = model.text_bert.text_prefix(input_ids, attention_mask)
    everything = torch.arange(input_ids.shape[0], device=input_ids.device)[None]
    cls_hidden = model.text_bert(mode="text", text_prefix=prefix, candidates=everything)[0]
    return ClassTexts(input_ids, attention_mask, model.text_embedding(cls_hidden), prefix)


class TextGroups:
    """Several texts per class (prompt ensembles): ``owner`` [T] int64, the class of each text.

    - similarity: a class's embedding is the mean of its texts' L2-normalised embeddings,
      renormalised (:meth:`class_embedding`);
    - matcher: a class's match probability is the mean of its texts' match probabilities
      (:meth:`class_match`), a value in [0, 1] like one text's, so the class softmax and the
      blend with alpha keep their scale; one outlying text moves the mean by at most 1/n (a mean
      of logits would let one very negative text veto the class).
    """

    def __init__(self, owner: torch.Tensor, n_classes: int):
        owner = torch.as_tensor(owner, dtype=torch.long)
        counts = torch.bincount(owner, minlength=n_classes) if owner.numel() else torch.zeros(n_classes)
        if owner.ndim != 1 or len(counts) != n_classes or bool((counts == 0).any()):
            raise LangCellInputError(f"Every one of the {n_classes} classes needs at least one text.",
                                     "Give each class at least one text (owner = class index of each text).")
        self.owner, self.n_classes = owner, int(n_classes)
        self.mean = torch.zeros(len(owner), n_classes).index_put_(
            (torch.arange(len(owner)), owner), 1.0 / counts[owner].float())  # [T, C]
        width = int(counts.max())
        order = owner.argsort(stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(owner)) - starts[owner[order]]
        self.table = order[starts][:, None].expand(-1, width).clone()  # [C, M], padded with each class's first text
        self.table[owner[order], slot] = order
        self.weight = torch.zeros(n_classes, width)
        self.weight[owner[order], slot] = 1.0 / counts[owner[order]].float()

    def to(self, device: torch.device) -> "TextGroups":
        self.owner, self.mean = self.owner.to(device), self.mean.to(device)
        self.table, self.weight = self.table.to(device), self.weight.to(device)
        return self

    def class_embedding(self, text_embedding: torch.Tensor) -> torch.Tensor:
        """[C, E]: the renormalised mean of each class's L2-normalised text embeddings [T, E]."""
        mean = self.mean.T.to(text_embedding.dtype) @ torch.nn.functional.normalize(text_embedding, dim=-1)
        return torch.nn.functional.normalize(mean, dim=-1)

    def class_match(self, text_match: torch.Tensor) -> torch.Tensor:
        """[B, C]: the mean match probability of each class's texts, from every text's [B, T]."""
        return text_match @ self.mean.to(text_match.dtype)

    def candidate_texts(self, candidates: torch.Tensor) -> torch.Tensor:
        """[B, K·M]: the texts of candidate classes [B, K] (each padded to M with its first text)."""
        return self.table[candidates].flatten(1)

    def candidate_match(self, text_match: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, K]: mean match probability per candidate class from :meth:`candidate_texts`' [B, K·M]."""
        weight = self.weight[candidates]
        return (text_match.view(weight.shape) * weight.to(text_match.dtype)).sum(dim=-1)


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
def fused_match_logits(
    model: LangCellModel,
    prefix: TextPrefix,
    cross_kv: CrossKV,
    cell_attention_mask: torch.Tensor | None,
    candidates: torch.Tensor,
) -> torch.Tensor:
    """Matcher logits [B, K, 2] of cell b with class ``candidates[b, k]``.

    ``prefix`` from ``model.text_bert.text_prefix`` (C class texts), ``cross_kv`` from
    ``model.precompute_cross_kv(cell_hidden)`` (B cells), ``cell_attention_mask`` [B, Lc] 1/0.
    Same numbers as one multimodal pass per pair (the official loop) up to float rounding.
    """
    cls_hidden = model.text_bert(mode="multimodal", cross_kv=cross_kv, encoder_attention_mask=cell_attention_mask,
                                 text_prefix=prefix, candidates=candidates)
    return model.ctm_head(cls_hidden)


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
        class_chunk_size: candidate classes (with ``groups``: texts) per fused matcher pass (bounds memory).
        groups: several texts per class (prompt ensembles): ``classes`` holds every text and
            ``groups`` says whose it is; None: one text per class, ``classes`` in class order.
            The cells' key/value are still projected once per batch, and every text of the
            candidate classes runs in the same packed pass.
    """

    def __init__(self, model: LangCellModel, classes: ClassTexts, alpha: float = OFFICIAL_ALPHA,
                 top_k: int | None = None, temperature: float = OFFICIAL_TEMPERATURE,
                 class_chunk_size: int = 32, groups: TextGroups | None = None):
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
        self.groups = None if groups is None else groups.to(classes.embedding.device)
        self.n_classes = len(classes) if groups is None else groups.n_classes
        self.class_embedding = classes.embedding if groups is None else self.groups.class_embedding(classes.embedding)
        self.uses_matcher = self.alpha < 1.0
        self.prefix = None
        if self.uses_matcher:
            self.prefix = classes.prefix
            if self.prefix is None and (top_k is None or top_k >= self.n_classes):  # exact mode: every class
                self.prefix = model.text_bert.text_prefix(classes.input_ids, classes.attention_mask)

    def match_probability(self, cell_hidden: torch.Tensor, cell_attention_mask: torch.Tensor | None,
                          candidates: torch.Tensor) -> torch.Tensor:
        """Match probabilities [B, K] of each cell with its candidate classes [B, K].

        Without a prefix of every class (top-k over texts encoded in chunks, e.g. thousands of
        classes) the prefix is built for this batch's distinct candidates only: memory and text
        work grow with B·K, not with C.
        """
        prefix = self.prefix
        if prefix is None:
            union, candidates = candidates.unique(return_inverse=True)
            ids, mask = trimmed(self.classes.input_ids[union], self.classes.attention_mask[union])
            prefix = self.model.text_bert.text_prefix(ids, mask)
        cross_kv = self.model.precompute_cross_kv(cell_hidden)
        chunks = [
            fused_match_logits(self.model, prefix, cross_kv, cell_attention_mask, part)
            for part in candidates.split(self.class_chunk_size, dim=1)
        ]
        return ctm_match_probability(at_least_fp32(torch.cat(chunks, dim=1)))

    def class_match_probability(self, cell_hidden: torch.Tensor, cell_attention_mask: torch.Tensor | None,
                                candidates: torch.Tensor) -> torch.Tensor:
        """Match probabilities [B, K] of each cell with its candidate classes [B, K] (with
        :attr:`groups`: the mean over each class's texts, all of them in one packed pass)."""
        if self.groups is None:
            return self.match_probability(cell_hidden, cell_attention_mask, candidates)
        if candidates.shape[1] == self.n_classes:  # every class (ascending): every text once
            texts = torch.arange(len(self.classes), device=candidates.device).expand(candidates.shape[0], -1)
            return self.groups.class_match(self.match_probability(cell_hidden, cell_attention_mask, texts))
        texts = self.groups.candidate_texts(candidates)
        return self.groups.candidate_match(self.match_probability(cell_hidden, cell_attention_mask, texts), candidates)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ZeroShotOutput:
        """Score cells [B, Lc] (``<cls>`` first, 1/0 mask)."""
        cell_hidden, cell_embedding = self.model.encode_cells(input_ids, attention_mask)
        with torch.autocast(cell_embedding.device.type, enabled=False):  # scores in fp32 (see the class doc)
            embedding = at_least_fp32(cell_embedding)
            logits = ctc_logits(embedding, self.class_embedding.to(embedding.dtype), self.temperature)
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
            candidate_match = self.class_match_probability(cell_hidden, attention_mask, candidates)
            match_prob.scatter_(1, candidates, candidate_match)
        else:  # one candidate: every class gets CTM 1/C whatever the matcher says: skip it
            candidate_match = torch.zeros(candidates.shape, dtype=ctc_probs.dtype, device=ctc_probs.device)
        ctm_probs, final = combine_scores(ctc_probs, candidate_match, candidates, self.alpha)
        return ZeroShotOutput(cell_embedding, ctc_probs, match_prob, ctm_probs, final,
                              candidate_argmax(final, candidates), candidates)
