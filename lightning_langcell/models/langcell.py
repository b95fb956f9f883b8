"""``LangCellModel``: cell encoder, text encoder (with fusion mode), projections and heads."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.cell_encoder import (
    MaskedGeneHead,
    build_cell_bert,
    check_packed_cells,
    gather_positions,
    pool_packed_cell_states,
    set_attn_implementation,
    set_hf_gradient_checkpointing,
)
from lightning_langcell.models.checkpoint_io import CheckpointMethods
from lightning_langcell.models.config import ATTN_IMPLEMENTATIONS, LangCellConfig
from lightning_langcell.models.matcher import MatchHead
from lightning_langcell.models.packed_attention import packed_attention
from lightning_langcell.models.text_encoder import CrossKV, TextEncoder, init_bert_weights


class LangCellModel(CheckpointMethods, nn.Module):
    """The two-tower LangCell model with its fusion matcher and gene-prediction head.

    Submodules: ``cell_bert`` (HF ``BertModel``, no pooler), ``text_bert`` (``TextEncoder``),
    ``cell_proj`` Linear(Hc → E), ``text_proj`` Linear(Ht → E), ``ctm_head`` Linear(Ht → 2),
    ``mgm_head`` (``MaskedGeneHead``) and the learnable temperature ``temp`` (use ``temperature()``).
    ``from_pretrained`` / ``save_pretrained`` / ``export_official`` come from ``CheckpointMethods``.
    """

    def __init__(self, config: LangCellConfig):
        super().__init__()
        self.config = config
        cell = config.cell_bert_config()
        text = config.text
        self.cell_bert = build_cell_bert(cell)
        self.text_bert = TextEncoder(text)
        self.cell_proj = nn.Linear(cell.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(text.hidden_size, config.embed_dim)
        self.ctm_head = MatchHead(text.hidden_size)
        self.mgm_head = MaskedGeneHead(
            cell.hidden_size, cell.vocab_size, cell.hidden_act, cell.layer_norm_eps, config.mgm_tie_word_embeddings
        )
        # shape [1], not a scalar: FSDP cannot shard 0-d parameters
        self.temp = nn.Parameter(torch.full((1,), float(config.temperature_init)))
        self.text_bert.set_attn_implementation(config.attn_implementation)
        self._register_load_state_dict_pre_hook(_scalar_temperature_to_vector)
        init = partial(init_bert_weights, std=cell.initializer_range)
        for head in (self.cell_proj, self.text_proj, self.ctm_head, self.mgm_head):
            head.apply(init)
        if config.gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    # -- configuration switches -------------------------------------------------------------
    def set_attn_implementation(self, implementation: str) -> None:
        """Attention of both encoders: ``"sdpa"`` (fused) or ``"eager"`` (scores materialised, as
        the released code runs), the zero-shot packed matcher pass included."""
        if implementation not in ATTN_IMPLEMENTATIONS:
            raise LangCellInputError(f"Unknown attention {implementation!r}.", f"Use one of {ATTN_IMPLEMENTATIONS}.")
        set_attn_implementation(self.cell_bert, implementation)
        self.text_bert.set_attn_implementation(implementation)
        self.config.attn_implementation = implementation

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute encoder layers in the backward pass (both encoders)."""
        set_hf_gradient_checkpointing(self.cell_bert, enabled)
        self.text_bert.set_gradient_checkpointing(enabled)
        self.config.gradient_checkpointing = enabled

    def temperature(self) -> torch.Tensor:
        """The contrastive temperature, ``temp`` clamped to [temperature_min, temperature_max]."""
        return self.temp.clamp(self.config.temperature_min, self.config.temperature_max)[0]

    # -- encoders ---------------------------------------------------------------------------
    def encode_cells(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells [B, L] (``<cls>`` first, 1/0 mask) → (last_hidden_state [B, L, Hc], embedding [B, E] L2-normalised).

        Packed cells (``cu_seqlens`` [B+1] given): ``input_ids``/``position_ids`` are [1, T], the
        attention is block-diagonal per cell and the hidden states come back packed [1, T, Hc].
        """
        if cu_seqlens is None:
            hidden = self.cell_bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden, F.normalize(self.cell_proj(self.pool_cells(hidden, attention_mask)), dim=-1)
        check_packed_cells(input_ids, cu_seqlens, position_ids)
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        with packed_attention(self.cell_bert):
            hidden = self.cell_bert(
                input_ids=input_ids, position_ids=position_ids, cu_seqlens=cu_seqlens, max_seqlen=int(max_seqlen)
            ).last_hidden_state
        pooled = pool_packed_cell_states(hidden, cu_seqlens, self.config.cell_pooling)
        return hidden, F.normalize(self.cell_proj(pooled), dim=-1)

    def pool_cells(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Cell vector [B, Hc]: the ``<cls>`` state, or the mean over gene positions (``cell_pooling``)."""
        return pool_cell_states(hidden, attention_mask, self.config.cell_pooling)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts [T, L] (``[CLS]`` first) → (CLS hidden [T, Ht], embedding [T, E] L2-normalised)."""
        cls_hidden = self.text_bert(input_ids, attention_mask, mode="text")[:, 0]
        return cls_hidden, self.text_embedding(cls_hidden)

    def text_embedding(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        """Text ``[CLS]`` states [T, Ht] → embeddings [T, E], projected and L2-normalised."""
        return F.normalize(self.text_proj(cls_hidden), dim=-1)

    def precompute_cross_kv(self, cell_hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention key/value of cell states [B, Lc, Hc], reusable for many texts."""
        return self.text_bert.precompute_cross_kv(cell_hidden)

    def match_logits(
        self,
        text_input_ids: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        cell_hidden: torch.Tensor | None,
        cell_attention_mask: torch.Tensor | None,
        cross_kv: CrossKV | None = None,
    ) -> torch.Tensor:
        """CTM logits [N, 2] (no match, match) for N (text, cell) pairs: the matcher on the ``[CLS]``
        state of the multimodal pass (text i with cell i; a batch of 1 broadcasts).

        Cells come as ``cell_hidden`` [B, Lc, Hc] or as ``cross_kv`` from ``precompute_cross_kv``;
        ``cell_attention_mask`` [B, Lc] is needed either way when cells are padded.
        """
        hidden = self.text_bert(
            text_input_ids,
            text_attention_mask,
            encoder_hidden_states=cell_hidden,
            encoder_attention_mask=cell_attention_mask,
            mode="multimodal",
            cross_kv=cross_kv,
        )
        return self.ctm_head(hidden[:, 0])

    def mgm_logits(self, last_hidden_state: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Gene logits [M, vocab] only at the masked positions (bool [B, L] or indices [M, 2])."""
        hidden = gather_positions(last_hidden_state, positions)
        return self.mgm_head(hidden, self.cell_bert.embeddings.word_embeddings.weight)


def pool_cell_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, L, Hc] cell states → [B, Hc]: ``"cls"`` the ``<cls>`` state, ``"mean"`` the mean over
    the real gene positions (``attention_mask`` [B, L] 1/0, ``<cls>`` first)."""
    if pooling == "cls":
        return hidden[:, 0]
    genes = attention_mask[:, 1:].unsqueeze(-1).to(hidden.dtype)
    return (hidden[:, 1:] * genes).sum(1) / genes.sum(1).clamp(min=1.0)


def _scalar_temperature_to_vector(state_dict, prefix, *args) -> None:
    """Checkpoints written before ``temp`` became a 1-element vector stored it as a scalar."""
    key = prefix + "temp"
    tensor = state_dict.get(key)
    if isinstance(tensor, torch.Tensor) and tensor.dim() == 0:  # (lazily loaded tensors are not Tensors)
        state_dict[key] = tensor.reshape(1)
