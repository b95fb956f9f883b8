"""CpuThreads: threads from the cores other work leaves free, and the previous setting restored."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tasks import cpu_threads
from lightning_langcell.tasks.cpu_threads import CpuThreads, free_cores


def _trainer(device: str = "cpu"):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


@pytest.mark.parametrize(("cores", "busy", "expected"), [(2, 0.0, 2), (2, 1.1, 1), (2, 5.0, 1), (8, 2.6, 5)])
def test_free_cores_subtracts_the_cores_other_work_keeps_busy(monkeypatch, cores, busy, expected):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: cores)
    assert free_cores(busy) == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux /proc/stat")
def test_busy_cores_sees_a_busy_process():
    """A child spinning on one core shows as about one more busy core than the idle reading."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        busy = cpu_threads.busy_cores(0.5)
    finally:
        spinner.wait()
    assert 0.8 <= busy <= (os.cpu_count() or 1) + 0.01


def test_setup_sets_the_threads_and_teardown_restores_them(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 1)
    callback = CpuThreads("auto")
    try:
        callback.setup(_trainer(), None, "fit")
        assert torch.get_num_threads() == 1
        callback.setup(_trainer(), None, "validate")  # nested stage: still restores the first value
        callback.teardown(_trainer(), None, "fit")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_a_count_is_used_as_given_and_gpu_runs_are_left_alone():
    before = torch.get_num_threads()
    try:
        callback = CpuThreads(1)
        callback.setup(_trainer("meta"), None, "fit")
        assert torch.get_num_threads() == before
        callback.setup(_trainer(), None, "fit")
        assert torch.get_num_threads() == 1
        callback.teardown(_trainer(), None, "fit")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(LangCellInputError, match="positive count"):
        CpuThreads(bad)
