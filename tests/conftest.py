"""Shared test settings: offline hub, few threads, the repo's test data folder."""

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    return TEST_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def randomise_parameters(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every parameter (biases, LayerNorms too), so no default init hides a bug.

    LayerNorm weights ~ 1 + N(0, 0.3), everything else ~ N(0, 0.3).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            centre = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            parameter.copy_(centre + 0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture(scope="session")
def randomise():
    """``randomise(module, seed=0)``: see :func:`randomise_parameters`."""
    return randomise_parameters


@contextlib.contextmanager
def _one_torch_thread():
    """Tiny models run fastest on one thread (and are immune to other jobs on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def single_torch_thread():
    """``with single_torch_thread(): ...`` runs the block with one torch thread."""
    return _one_torch_thread


@pytest.fixture()
def official_copy(test_data_dir, tmp_path) -> Path:
    """A writable copy of the official-layout tiny fixture (tests/data/langcell-official-tiny)."""
    target = tmp_path / "official"
    shutil.copytree(test_data_dir / "langcell-official-tiny", target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
