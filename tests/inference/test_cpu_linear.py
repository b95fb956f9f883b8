"""oneDNN packed linear layers for CPU inference: same values as nn.Linear, used only where safe."""

import gc

import pytest
import torch
import torch.nn.functional as F

from lightning_langcell.inference.cpu_linear import PackedCpuLinear, packed_cpu_linear, packed_linear_supported

pytestmark = pytest.mark.skipif(not packed_linear_supported(), reason="torch built without oneDNN")
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(16, 24)


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that took the packed path."""
    calls = []
    original = PackedCpuLinear.linear

    def counted(self, *args, **kwargs):
        calls.append(args[1].shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PackedCpuLinear, "linear", counted)
    return calls


@pytest.mark.parametrize("shape", [(5, 16), (3, 7, 16)])
def test_packed_values_equal_nn_linear(linear, spy, shape):
    states = torch.randn(shape)
    with torch.no_grad():
        expected = linear(states)
        without_bias = F.linear(states, linear.weight)
        with PackedCpuLinear():
            packed = linear(states)
            packed_without_bias = F.linear(states, linear.weight)
            assert PackedCpuLinear.current() is not None
    assert PackedCpuLinear.current() is None
    assert len(spy) == 2 and packed.shape == expected.shape
    torch.testing.assert_close(packed, expected, **TOL)
    torch.testing.assert_close(packed_without_bias, without_bias, **TOL)
    assert not torch.equal(expected, without_bias)  # the bias was applied


@pytest.mark.parametrize("activation, function", [("gelu", F.gelu), ("relu", F.relu)])
def test_fused_activation(linear, activation, function):
    states = torch.randn(4, 16)
    with torch.no_grad(), PackedCpuLinear() as mode:
        fused = mode.linear(states, linear.weight, linear.bias, activation)
    torch.testing.assert_close(fused, function(F.linear(states, linear.weight, linear.bias)).detach(), **TOL)
    assert (fused < 0).any() if activation == "gelu" else (fused >= 0).all()


def test_training_low_precision_and_plain_tensors_are_left_alone(linear, spy):
    states = torch.randn(4, 16, requires_grad=True)
    with PackedCpuLinear():
        out = linear(states)  # gradients on: the default path, differentiable
        out.sum().backward()
        with torch.no_grad():
            linear.to(torch.bfloat16)(states.detach().bfloat16())  # bf16
            linear.float()
            F.linear(states.detach(), linear.weight.detach())  # not a Parameter
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert linear(states.detach()).dtype == torch.bfloat16  # autocast still applies
    assert spy == [] and states.grad is not None and states.grad.abs().sum() > 0


def test_weights_repacked_after_in_place_change_and_freed_with_them():
    linear = torch.nn.Linear(16, 24)  # not a fixture: pytest would keep it alive
    states = torch.randn(4, 16)
    with torch.no_grad(), PackedCpuLinear():
        before = linear(states)
        linear.weight.mul_(2.0)  # an optimizer step changes weights in place
        after = linear(states)
    torch.testing.assert_close(after - linear.bias, 2 * (before - linear.bias), **TOL)
    key = id(linear.weight)
    assert key in PackedCpuLinear._packed
    del linear
    gc.collect()
    assert key not in PackedCpuLinear._packed


def test_packed_cpu_linear_switch():
    assert isinstance(packed_cpu_linear("cpu", enabled=True), PackedCpuLinear)
    assert not isinstance(packed_cpu_linear("cpu", enabled=False), PackedCpuLinear)
    assert not isinstance(packed_cpu_linear(torch.device("meta"), enabled=True), PackedCpuLinear)


@pytest.mark.parametrize("capability, packs", [("AVX512", True), ("AVX2", False), ("DEFAULT", False)])
def test_packed_by_default_only_on_avx512(monkeypatch, capability, packs):
    """Measured faster than MKL on AVX-512 (Zen 4), slower on AVX2-only CPUs: the default follows."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert isinstance(packed_cpu_linear("cpu"), PackedCpuLinear) is packs
