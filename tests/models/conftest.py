"""Helpers for the model tests."""

import pytest
import torch


def randomise_parameters(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every parameter (biases, LayerNorms too), so no default init hides a bug.

    LayerNorm weights ~ 1 + N(0, 0.3), everything else ~ N(0, 0.3).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            centre = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            parameter.copy_(centre + 0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture()
def randomise():
    return randomise_parameters
