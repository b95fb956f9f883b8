"""Block-diagonal attention for packed cells: all cells of a batch in one row [1, T], each
attending only to its own tokens, delimited by cumulative lengths ``cu_seqlens`` [B+1].

FlashAttention's variable-length kernel runs it when ``flash_attn`` is installed and the tensors
are on CUDA; otherwise PyTorch's SDPA runs once per cell over its segment (exact, and no dense
T × T mask is ever built). The function is registered with transformers' ``AttentionInterface``
under :data:`PACKED_ATTENTION`; :func:`packed_attention` selects it for one forward of a BERT.
It runs eagerly under ``torch.compile`` (the rest of the layer compiles around it).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

PACKED_ATTENTION = "langcell_packed"
"""Name of the block-diagonal attention in transformers' ``AttentionInterface``."""

_HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _segment_sdpa(query, key, value, cu_seqlens, dropout, scaling):
    """[1, heads, T, d] → [1, heads, T, d]: SDPA on each cell's segment separately."""
    bounds = cu_seqlens.tolist()
    outputs = [
        F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], dropout_p=dropout, scale=scaling
        )
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outputs, dim=2)


def _flash_varlen(query, key, value, cu_seqlens, max_seqlen, dropout, scaling):
    """[1, heads, T, d] → [1, T, heads, d] with FlashAttention's variable-length kernel."""
    from flash_attn import flash_attn_varlen_func

    q, k, v = (tensor[0].transpose(0, 1) for tensor in (query, key, value))  # [T, heads, d]
    cu = cu_seqlens.to(torch.int32)
    out = flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, dropout_p=dropout, softmax_scale=scaling)
    return out.unsqueeze(0)


@torch.compiler.disable  # per-cell bounds are data: torch.compile graph-breaks here (inductor fails on them)
def packed_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             cu_seqlens=None, max_seqlen=None, **kwargs):
    """transformers attention function (``AttentionInterface`` signature) for packed cells.

    ``query``/``key``/``value`` are [1, heads, T, d]; ``cu_seqlens`` int [B+1] and ``max_seqlen``
    come through the model's ``**kwargs``. Returns ([1, T, heads, d], None).
    """
    if cu_seqlens is None:
        raise ValueError(f"attention {PACKED_ATTENTION!r} needs cu_seqlens (packed cells).")
    if _HAS_FLASH_ATTN and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        return _flash_varlen(query, key, value, cu_seqlens, int(max_seqlen), dropout, scaling), None
    return _segment_sdpa(query, key, value, cu_seqlens, dropout, scaling).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)


@contextlib.contextmanager
def packed_attention(bert) -> Iterator[None]:
    """Run ``bert`` (an HF model) with the packed attention inside the block, its own outside.

    The switch is on ``bert.config`` (shared by its layers), so one model should not run packed
    and padded forwards from several threads at once.
    """
    config = bert.config
    previous = config._attn_implementation
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
