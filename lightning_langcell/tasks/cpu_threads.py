"""``CpuThreads``: a callback that sizes torch's CPU thread pool for one run, then restores it.

PyTorch starts one intra-op thread per core. When other processes already keep some of those
cores busy, the extra threads wait for each other inside every parallel region and the run's
CPU time grows instead of its speed. With ``num_threads="auto"`` the callback counts the cores
left free by other work (usable cores minus the cores busy over half a second at the start of
the run, read from ``/proc/stat``) and uses that many threads (at least one). It is opt-in (a recipe lists it) and puts the
previous setting back when the run ends.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from lightning.pytorch import Callback

from lightning_langcell.errors import LangCellInputError

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores(interval: float = 0.5) -> float:
    """Cores kept busy by all processes over ``interval`` seconds (Linux ``/proc/stat``); where that
    file is missing, the 1-minute load average."""
    def times() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total_0, idle_0 = times()
        time.sleep(interval)
        total_1, idle_1 = times()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # no load average on this platform
            return 0.0
    elapsed = max(total_1 - total_0, 1)
    return (os.cpu_count() or 1) * (1.0 - (idle_1 - idle_0) / elapsed)


def free_cores(busy: float | None = None) -> int:
    """Usable cores not kept busy by other processes (measured now unless ``busy`` is given), ≥ 1."""
    busy = busy_cores() if busy is None else busy
    return max(1, min(usable_cores(), round(usable_cores() - busy)))


class CpuThreads(Callback):
    """Use ``num_threads`` torch CPU threads during fit / validate / test / predict.

    Args:
        num_threads: a positive count, or ``"auto"`` for the cores left free by other work.
    """

    def __init__(self, num_threads: int | str = "auto"):
        if num_threads != "auto" and not (isinstance(num_threads, int) and num_threads > 0):
            raise LangCellInputError(
                f"CpuThreads(num_threads={num_threads!r}) is neither a positive count nor 'auto'.",
                "Give a number of threads such as 2, or 'auto'.",
            )
        self.num_threads = num_threads
        self._previous: int | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu" or self._previous is not None:
            return
        wanted = free_cores() if self.num_threads == "auto" else self.num_threads
        self._previous = torch.get_num_threads()
        torch.set_num_threads(wanted)
        log.info("CpuThreads: %d torch threads for this run (was %d)", wanted, self._previous)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None
