"""Keep freed CPU memory inside the process while scoring: no page faults for every big tensor.

PyTorch's CPU tensors come from glibc ``malloc``, which serves blocks above its mmap threshold
(at most 32 MiB) with fresh ``mmap`` pages and hands them back to the kernel on ``free``. The
zero-shot passes allocate and free tens of such tensors per layer (FFN intermediates, attention
outputs), so every one of them is page-faulted in again, which is slow under virtualisation.
Measured on the 2-core AVX2 machine of our benchmarks (official sizes, fp32): ours exact
10.7-11.4 s with the defaults, 9.1-9.3 s with freed memory kept (``benchmarks/zero_shot_benchmark``
``--memory`` sets how each case runs). jemalloc or tcmalloc (``LD_PRELOAD``) do the same for a
whole process; this module does it from Python, for a scope:

``with retained_cpu_memory("cpu"):`` sets glibc's ``M_MMAP_MAX`` to 0 (big blocks come from the
heap, which reuses freed ones) and ``M_TRIM_THRESHOLD`` to 2 GiB (up to that much free memory
stays at the heap's top); the outermost exit restores glibc's defaults (65,536 mmaps, 128 KiB)
and returns the free memory to the kernel (``malloc_trim``). After a scope, glibc's mmap
threshold no longer adapts by itself (setting either option turns that off). Scopes nest and are
thread-safe; anything but CPU, or a C library other than glibc (macOS, musl), makes them no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import threading

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
RETAINED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2 ** 31 - 1}  # mallopt takes a C int: 2 GiB

_lock = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc through ctypes, or None where ``mallopt``/``malloc_trim`` are missing."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # no such library, or one without mallopt / malloc_trim
        return None


def retaining_supported() -> bool:
    """Whether this process's C library lets us keep freed memory (glibc)."""
    return _libc() is not None


def retaining_active() -> bool:
    """Whether a :func:`retained_cpu_memory` scope is open."""
    return _depth > 0


def _set(options: dict[int, int]) -> None:
    libc = _libc()
    for option, value in options.items():
        if not libc.mallopt(option, value):
            raise RuntimeError(f"glibc mallopt({option}, {value}) failed")


@contextlib.contextmanager
def retained_cpu_memory(device: torch.device | str, enabled: bool = True):
    """Scope in which freed CPU memory stays in the process for reuse (see the module doc)."""
    global _depth
    if not enabled or torch.device(device).type != "cpu" or not retaining_supported():
        yield
        return
    with _lock:
        if _depth == 0:
            _set(RETAINED)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(GLIBC_DEFAULTS)
                _libc().malloc_trim(0)
