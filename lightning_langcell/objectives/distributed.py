"""Gathering a batch across ``torch.distributed`` ranks, with or without gradient.

Every function here is the identity (one rank, offset 0) when ``torch.distributed`` is not
initialised or the world holds one process, so the objectives run unchanged on one device.

Ranks may hold batches of different shapes (a short last batch, length-grouped padding):
shapes are exchanged first, every dimension is padded to the world maximum with
``pad_value``, and the padding along dim 0 is cut away again. Dimensions ≥ 1 stay padded to
the world maximum (pad attention masks with 0 so padded positions are ignored).

Gradient convention (OpenCLIP "local loss"): the backward of a gathered tensor sums the
gradients that all ranks computed for it and hands each rank the slice of its own rows
(an all-reduce, which works on every backend, gloo included). A rank's loss built from its
local rows against gathered columns thus sends to its own embeddings the gradient of the
SUM of all ranks' losses. Pair it with :func:`world_mean` so that DDP's gradient averaging
yields exactly the gradient of the single-process loss on the world batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


@dataclass(frozen=True)
class GatheredBatch:
    """A tensor gathered from every rank, concatenated along dim 0 in rank order.

    ``sizes[r]`` is rank r's number of rows; this rank's rows are ``world[local_slice]``.
    """

    world: torch.Tensor
    sizes: tuple[int, ...]
    rank: int

    @property
    def offset(self) -> int:
        """Index of this rank's first row in ``world``."""
        return sum(self.sizes[: self.rank])

    @property
    def local_slice(self) -> slice:
        return slice(self.offset, self.offset + self.sizes[self.rank])


class _AllGatherSumBackward(torch.autograd.Function):
    """all_gather of equal-shape tensors → [W, ...]; backward: all-reduce SUM, own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def _world_shapes(tensor: torch.Tensor) -> torch.Tensor:
    """[W, ndim] shapes of the tensor on every rank."""
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    return torch.stack(shapes).cpu()


def _pad_to(tensor: torch.Tensor, shape: list[int], pad_value: float) -> torch.Tensor:
    """Right-pad every dimension of ``tensor`` up to ``shape`` (differentiable)."""
    pads: list[int] = []
    for dim in reversed(range(tensor.dim())):
        pads += [0, shape[dim] - tensor.shape[dim]]
    if not any(pads):
        return tensor
    return F.pad(tensor, pads, value=pad_value)


def gather_world(tensor: torch.Tensor, with_grad: bool, pad_value: float = 0) -> GatheredBatch:
    """Gather ``tensor`` [n_r, ...] from every rank into ``world`` [sum n_r, *max shape].

    ``with_grad=True`` keeps the autograd graph (see the module docstring for the
    convention); ``False`` returns a detached result. Identity when not distributed.
    """
    if tensor.dim() == 0:
        raise ValueError("gather_world needs a tensor with a batch dimension (dim 0); got a scalar.")
    if not is_distributed():
        return GatheredBatch(tensor if with_grad else tensor.detach(), (tensor.shape[0],), 0)
    shapes = _world_shapes(tensor)
    same_shape = bool((shapes == shapes[0]).all())
    max_shape = shapes.max(dim=0).values.tolist()
    sizes = tuple(int(n) for n in shapes[:, 0])
    padded = tensor if same_shape else _pad_to(tensor, max_shape, pad_value)
    if with_grad:
        stacked = _AllGatherSumBackward.apply(padded)
    else:
        with torch.no_grad():
            parts = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(parts, padded.detach().contiguous())
            stacked = torch.stack(parts)
    if len(set(sizes)) == 1:
        world = stacked.flatten(0, 1)
    else:
        world = torch.cat([stacked[r, :n] for r, n in enumerate(sizes)])
    return GatheredBatch(world, sizes, dist.get_rank())


def all_gather_with_grad(tensor: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """[n_r, ...] on each rank → [sum n_r, ...]; gradient flows back to each rank's rows."""
    return gather_world(tensor, with_grad=True, pad_value=pad_value).world


def all_gather_no_grad(tensor: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """[n_r, ...] on each rank → [sum n_r, ...], detached (ids, masks, token ids)."""
    return gather_world(tensor, with_grad=False, pad_value=pad_value).world


def world_mean(per_row: torch.Tensor, world_rows: int | None = None) -> torch.Tensor:
    """This rank's share of the mean over all rows of the world: ``W * sum(local) / N_world``.

    The average of this value over ranks is the world mean, and under DDP (gradients averaged
    over W ranks) combined with :func:`gather_world` the gradient equals that of the
    single-process mean over the world batch, also when ranks hold different row counts.
    ``world_rows`` (N_world) is all-reduced when not given. 0 (kept in the graph) when empty.
    Not distributed: the plain mean.
    """
    if not is_distributed():
        return per_row.mean() if per_row.numel() else per_row.sum()
    if world_rows is None:
        count = torch.tensor(float(per_row.numel()), device=per_row.device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        world_rows = int(count.item())
    if world_rows == 0:
        return per_row.sum()
    return per_row.sum() * (dist.get_world_size() / world_rows)
