"""The cell encoder (HF ``BertModel`` in Geneformer's shape) and its masked-gene-modelling head.

The cell BERT keeps HF's token-type embeddings: with no ``token_type_ids`` given, row 0 is added to
every position, as the released model (and Geneformer) computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel
from transformers.activations import ACT2FN

from lightning_langcell.errors import LangCellInputError


def build_cell_bert(config: BertConfig) -> BertModel:
    """A freshly initialised cell ``BertModel`` without pooler (attention from ``config``)."""
    return BertModel(config, add_pooling_layer=False)


def set_attn_implementation(bert: BertModel, implementation: str) -> None:
    """Switch an HF BERT between ``"sdpa"`` and ``"eager"`` attention in place."""
    if hasattr(bert, "set_attn_implementation"):
        bert.set_attn_implementation(implementation)
    else:  # transformers < 4.48
        bert.config._attn_implementation = implementation


def set_hf_gradient_checkpointing(bert: BertModel, enabled: bool) -> None:
    """Toggle activation checkpointing (non-reentrant) on an HF model, across transformers versions."""
    if not enabled:
        disable = getattr(bert, "activation_checkpointing_disable", None) or bert.gradient_checkpointing_disable
        disable()
        return
    if hasattr(bert, "activation_checkpointing_enable"):
        bert.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class MaskedGeneHead(nn.Module):
    """Predicts gene tokens from cell hidden states: dense + act + LayerNorm, then a decoder.

    The decoder's weight is the cell word-embedding matrix when ``tie_word_embeddings`` (passed to
    ``forward``), otherwise its own ``decoder`` Linear; the output bias is always ``bias`` [vocab].
    """

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str, layer_norm_eps: float,
                 tie_word_embeddings: bool = True):
        super().__init__()
        self.transform = nn.Sequential()
        self.transform.add_module("dense", nn.Linear(hidden_size, hidden_size))
        self.transform.add_module("act", ACT2FN[hidden_act])
        self.transform.add_module("LayerNorm", nn.LayerNorm(hidden_size, eps=layer_norm_eps))
        self.decoder = None if tie_word_embeddings else nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """[..., H] → logits [..., vocab]; ``word_embeddings`` [vocab, H] is used when tied."""
        weight = word_embeddings if self.decoder is None else self.decoder.weight
        return F.linear(self.transform(hidden_states), weight, self.bias)


def gather_positions(last_hidden_state: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Hidden states at the selected positions.

    ``positions`` is a bool mask [B, L] (True = masked gene), or an index tensor [M, 2] of
    (cell, position) pairs. Returns [M, H] in row-major order of the mask.
    """
    if positions.dtype == torch.bool:
        return last_hidden_state[positions]
    if positions.ndim == 2 and positions.shape[1] == 2:
        return last_hidden_state[positions[:, 0], positions[:, 1]]
    raise LangCellInputError(
        f"positions of shape {tuple(positions.shape)} and dtype {positions.dtype} select no genes.",
        "Pass a bool mask [B, L] (e.g. labels != -100) or (cell, position) indices [M, 2].",
    )


def check_packed_cells(input_ids: torch.Tensor, cu_seqlens: torch.Tensor, position_ids: torch.Tensor | None) -> None:
    """Packed cells are one row [1, T] delimited by ``cu_seqlens`` [B+1] (0 first, T last) with
    ``position_ids`` [1, T] restarting at 0 in every cell."""
    total = input_ids.shape[-1]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise LangCellInputError(
            f"packed cells need input_ids [1, T] and cu_seqlens [B+1]; got {tuple(input_ids.shape)} and "
            f"{tuple(cu_seqlens.shape)}.",
            "Collate with CellBatchCollator(packed=True), or pass padded cells without cu_seqlens.",
        )
    if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != total or position_ids is None \
            or tuple(position_ids.shape) != tuple(input_ids.shape):
        raise LangCellInputError(
            f"cu_seqlens must run from 0 to T={total} (got {int(cu_seqlens[0])}..{int(cu_seqlens[-1])}) and "
            "position_ids must be given with the shape of input_ids.",
            "Use the cu_seqlens and position_ids of one CellBatchCollator(packed=True) batch together.",
        )


def packed_cell_lengths(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Tokens per cell (``<cls>`` included) [B] from cumulative lengths [B+1]."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def pool_packed_cell_states(hidden: torch.Tensor, cu_seqlens: torch.Tensor, pooling: str) -> torch.Tensor:
    """Packed states [1, T, H] → [B, H]: ``"cls"`` each cell's first (``<cls>``) state, ``"mean"``
    the mean over its gene positions (as ``pool_cell_states`` on the padded cells)."""
    states = hidden[0]
    starts = cu_seqlens[:-1].long()
    if pooling == "cls":
        return states[starts]
    lengths = packed_cell_lengths(cu_seqlens)
    cell_of_token = torch.repeat_interleave(torch.arange(lengths.numel(), device=states.device), lengths)
    is_gene = torch.ones(states.shape[0], dtype=states.dtype, device=states.device)
    is_gene[starts] = 0
    sums = torch.zeros(lengths.numel(), states.shape[1], dtype=states.dtype, device=states.device)
    sums.index_add_(0, cell_of_token, states * is_gene.unsqueeze(1))
    return sums / (lengths - 1).clamp(min=1).unsqueeze(1).to(states.dtype)

