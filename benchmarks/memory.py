"""Peak memory of one benchmark case: CUDA's allocator peak, or the process's resident peak.

On Linux the resident high-water mark (``VmHWM``) is reset by writing ``5`` to
``/proc/self/clear_refs``, so a CPU case's peak is its own (the process's resident memory when it
started included), not the largest of every case run before it in the same process.
"""

from __future__ import annotations

import resource

import torch


def reset_peak(device: torch.device | str = "cpu") -> bool:
    """Start a new peak; returns False where the CPU peak cannot be reset (then it is cumulative)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory(device: torch.device | str = "cpu") -> tuple[float, str]:
    """(peak MiB since :func:`reset_peak`, source): CUDA max allocated, or the resident high-water mark."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "process_vmhwm"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_ru_maxrss"  # KiB on Linux
