"""Freed CPU memory kept in the process while scoring: big tensors come from the reused heap."""

import ctypes
import subprocess
import sys
import types

import pytest
import torch

from lightning_langcell.inference import cpu_memory
from lightning_langcell.inference.cpu_memory import retained_cpu_memory, retaining_active, retaining_supported

pytestmark = pytest.mark.skipif(not retaining_supported(), reason="needs glibc (mallopt)")


PROBE = """
import ctypes, torch
from lightning_langcell.inference.cpu_memory import retained_cpu_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def own_mmaps_of_a_48_mib_tensor():  # glibc's count of blocks served by their own mmap
    before = libc.mallinfo2().hblks
    tensor = torch.ones(48 * 2 ** 20 // 4)
    return libc.mallinfo2().hblks - before

outside = own_mmaps_of_a_48_mib_tensor()
with retained_cpu_memory("cpu"):
    inside = [own_mmaps_of_a_48_mib_tensor() for _ in range(3)]
print(outside, *inside)
"""


def test_big_tensors_come_from_the_heap_inside_the_scope():
    """In a fresh process: a 48 MiB tensor (above glibc's largest mmap threshold, 32 MiB) gets its
    own mmap by default, and comes from the reused heap inside the scope."""
    if not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("glibc < 2.33 has no mallinfo2")
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["1", "0", "0", "0"]


def test_scope_sets_then_restores_glibc_options(monkeypatch):
    calls = []
    libc = types.SimpleNamespace(mallopt=lambda option, value: calls.append((option, value)) or 1,
                                 malloc_trim=lambda pad: calls.append(("trim", pad)) or 1)
    monkeypatch.setattr(cpu_memory, "_libc", lambda: libc)
    with retained_cpu_memory("cpu"):
        assert dict(calls) == {cpu_memory.M_MMAP_MAX: 0, cpu_memory.M_TRIM_THRESHOLD: 2 ** 31 - 1}
        calls.clear()
    assert calls == [(cpu_memory.M_MMAP_MAX, 65536), (cpu_memory.M_TRIM_THRESHOLD, 128 * 1024), ("trim", 0)]


def test_scopes_nest_and_close_on_errors():
    with pytest.raises(ValueError):
        with retained_cpu_memory("cpu"):
            with retained_cpu_memory(torch.device("cpu")):
                assert cpu_memory._depth == 2
            assert retaining_active()
            raise ValueError("inside")
    assert cpu_memory._depth == 0 and not retaining_active()


@pytest.mark.parametrize("device, enabled", [("meta", True), ("cpu", False)])
def test_no_op_off_cpu_or_when_disabled(device, enabled):
    with retained_cpu_memory(device, enabled=enabled):
        assert not retaining_active()


def test_scorer_and_prediction_writer_hold_a_scope(official, monkeypatch):
    from lightning_langcell.inference.zero_shot import ZeroShotScorer
    from lightning_langcell.tasks.zero_shot import ZeroShotPredictionWriter

    model, inputs, expected, classes = official
    seen = []
    score = ZeroShotScorer._score
    monkeypatch.setattr(ZeroShotScorer, "_score", lambda self, *a: seen.append(retaining_active()) or score(self, *a))
    retained = ZeroShotScorer(model, classes)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    plain = ZeroShotScorer(model, classes, retain_memory=False)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    assert seen == [True, False] and not retaining_active()
    assert torch.equal(retained.final_probs, plain.final_probs)
    torch.testing.assert_close(plain.final_probs, expected["final_probs"], atol=1e-5, rtol=1e-5)

    writer, module = ZeroShotPredictionWriter(), types.SimpleNamespace(device=torch.device("cpu"))
    writer.on_predict_start(None, module)
    assert retaining_active()
    writer.on_predict_end(None, module)
    assert not retaining_active()
    writer.on_predict_start(None, module)
    writer.on_exception(None, module, RuntimeError("interrupted"))
    assert not retaining_active()
