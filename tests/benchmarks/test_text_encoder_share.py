"""The text-encoder share benchmark's forward clock: time inside a module's forward, nested calls once."""

from __future__ import annotations

import time

import torch

from benchmarks.text_encoder_share import ForwardClock


class Sleeper(torch.nn.Module):
    def __init__(self, seconds: float, inner: torch.nn.Module | None = None):
        super().__init__()
        self.seconds, self.inner = seconds, inner

    def forward(self, x):
        time.sleep(self.seconds)
        return x if self.inner is None else self.inner(x)


def test_forward_clock_counts_nested_forwards_once_and_nothing_outside():
    inner = Sleeper(0.05)
    outer = Sleeper(0.05, inner)
    clock = ForwardClock(outer)
    inner_clock = ForwardClock(inner)
    start = time.perf_counter()
    outer(torch.zeros(1))
    outer(torch.zeros(1))
    time.sleep(0.1)  # outside any forward: not counted
    elapsed = time.perf_counter() - start
    assert clock.seconds >= 0.2 and inner_clock.seconds >= 0.1
    assert clock.seconds <= elapsed - 0.1  # the sleep outside is not in it
    assert clock.seconds - inner_clock.seconds >= 0.1  # the outer's own sleeps, the inner's once
