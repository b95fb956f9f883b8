"""fp32 linear layers through oneDNN with weights packed once: faster CPU inference.

``torch.ops.mkldnn._linear_pointwise`` with a weight reordered once by
``torch.ops.mkldnn._reorder_linear_weight`` (the kernels torch.compile's CPU backend emits) runs
the zero-shot matmuls at ~220 GFLOP/s on a 2-core AVX-512 machine (AMD Zen 4), against ~160-195
for PyTorch's default CPU path (MKL), with the same fp32 arithmetic in another summation order
(differences ~1e-7 relative). It can also apply the activation (GELU, ReLU) in the same pass. On
a 2-core AVX2-only machine (AMD EPYC) it measured slower than MKL for the large shapes (zero-shot
exact 9.3 s stock vs 10.6 s packed), so by default it is used only where the CPU has AVX-512
(:func:`packed_linear_pays_off`).

:class:`PackedCpuLinear` is a ``TorchFunctionMode``: inside ``with PackedCpuLinear():`` every
``F.linear`` (so every ``nn.Linear``) of an fp32 CPU Parameter, with gradients off and no
autocast, runs packed; anything else runs unchanged. Each weight is packed once per process
(~0.2 s for the 134M weights of the official sizes), repacked when it changes in place (an
optimizer step), and its packed copy (one extra copy of the weights in memory) is freed with it.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

ACTIVATIONS = {"gelu": ("gelu", "none"), "relu": ("relu", "")}  # our name -> (oneDNN post-op, algorithm)


def packed_linear_supported() -> bool:
    """Whether this torch build has the oneDNN packed-linear CPU kernels."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def packed_linear_pays_off() -> bool:
    """Whether packing is the faster choice here: the kernels exist and the CPU has AVX-512."""
    return packed_linear_supported() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class PackedCpuLinear(TorchFunctionMode):
    """Reroutes eligible ``F.linear`` calls to oneDNN with packed weights (see the module doc)."""

    _active: list["PackedCpuLinear"] = []
    _packed: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}  # id(weight) -> (weight, version, packed)

    @classmethod
    def current(cls) -> "PackedCpuLinear | None":
        """The innermost active mode, or None."""
        return cls._active[-1] if cls._active else None

    def __enter__(self):
        PackedCpuLinear._active.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        PackedCpuLinear._active.remove(self)
        return super().__exit__(*exc)

    @staticmethod
    def applies(states: torch.Tensor, weight: torch.Tensor) -> bool:
        """fp32 CPU input and weight Parameter, gradients and autocast off."""
        return (isinstance(weight, torch.nn.Parameter) and weight.dim() == 2 and states.dim() >= 2
                and states.dtype == torch.float32 and weight.dtype == torch.float32
                and states.device.type == "cpu" and weight.device.type == "cpu"
                and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"))

    def packed(self, weight: torch.Tensor) -> torch.Tensor:
        """The oneDNN-packed copy of ``weight`` (packed on first use and after in-place changes)."""
        key, cache = id(weight), PackedCpuLinear._packed
        entry = cache.get(key)
        if entry is None or entry[0]() is not weight or entry[1] != weight._version:
            if entry is None or entry[0]() is not weight:  # drop the packed copy with the weight
                weakref.finalize(weight, cache.pop, key, None)
            entry = (weakref.ref(weight), weight._version,
                     torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
            cache[key] = entry
        return entry[2]

    def linear(self, states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               activation: str | None = None) -> torch.Tensor:
        """``act(F.linear(states, weight, bias))`` in one oneDNN pass; ``activation`` a key of
        ``ACTIVATIONS`` or None. The caller checks :meth:`applies`."""
        post_op, algorithm = ACTIVATIONS[activation] if activation else ("none", "")
        bias = None if bias is None else bias.detach()
        return torch.ops.mkldnn._linear_pointwise(states, self.packed(weight), bias, post_op, [], algorithm)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            states, weight = args[0], kwargs.get("weight", args[1] if len(args) > 1 else None)
            bias = kwargs.get("bias", args[2] if len(args) > 2 else None)
            if weight is not None and self.applies(states, weight):
                return self.linear(states, weight, bias)
        return func(*args, **kwargs)


def packed_cpu_linear(device: torch.device, enabled: bool | None = None):
    """``PackedCpuLinear()`` on the CPU when ``enabled`` (None: where it pays off, i.e. AVX-512) and
    the kernels exist; else a no-op."""
    if enabled is None:
        enabled = packed_linear_pays_off()
    if enabled and torch.device(device).type == "cpu" and packed_linear_supported():
        return PackedCpuLinear()
    return contextlib.nullcontext()
