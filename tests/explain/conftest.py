"""The quadrant model: a network whose only evidence is the top-left quadrant (the first octant of a volume), so a
faithful map is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medclass.models.base import Classifier


class QuadrantModel(Classifier):
    """Looks only at the top-left quadrant (2D) or first octant (3D): logit = mean of those pixels (one logit)."""

    default_cam_layer = "features"

    def __init__(self, size: int = 16, dims: int = 2) -> None:
        super().__init__(num_features=1, num_classes=1)
        conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 1, 1, bias=False)
        nn.init.ones_(conv.weight)
        mask = torch.zeros(1, 1, *(size,) * dims)
        mask[(..., *(slice(0, size // 2),) * dims)] = 1
        self.register_buffer("mask", mask)
        self.features = _Masked(conv, self.mask)
        nn.init.constant_(self.fc.weight, 4.0)
        nn.init.zeros_(self.fc.bias)


class _Masked(nn.Module):
    def __init__(self, conv: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.conv, self.mask = conv, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.mask


def quadrant_inputs(b: int = 3, size: int = 16, dims: int = 2) -> torch.Tensor:
    return torch.rand(b, 1, *(size,) * dims, generator=torch.Generator().manual_seed(0)) * 2 - 1 + 0.2


@pytest.fixture
def quadrant() -> SimpleNamespace:
    """``quadrant.model()`` (a fresh QuadrantModel) and ``quadrant.inputs(b)`` (a seeded batch)."""
    return SimpleNamespace(model=QuadrantModel, inputs=quadrant_inputs)
