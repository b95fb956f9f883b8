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
