"""The one model contract every medclass architecture honours.

``forward(x) == forward_head(forward_features(x))``; ``reset_classifier(n)`` swaps the output
layer; ``default_cam_layer`` names the module whose activations class-activation maps use.
timm models already provide the first three; :func:`~medclass.models.registry.create_model`
adds ``default_cam_layer`` to them.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_nd(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def bn_nd(dims: int) -> type[nn.Module]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]


class Classifier(nn.Module):
    """Base class: a feature extractor followed by global average pooling, dropout and a linear head.

    Subclasses build ``self.features`` (any module mapping ``(B, C, *spatial)`` to a feature map
    ``(B, num_features, *spatial')``) and set ``default_cam_layer``.

    Args:
        num_features: Channels of the final feature map.
        num_classes: Outputs of the head (0 gives an identity head).
        drop_rate: Dropout before the head.
    """

    default_cam_layer: str = "features"

    def __init__(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc: nn.Module = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> feature map ``(B, num_features, *spatial')``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits ``(B, num_classes)`` (or pooled features ``(B, num_features)``)."""
        x = x.mean(dim=tuple(range(2, x.ndim)))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one of ``num_classes`` outputs (0 = identity)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
