"""A shallow custom CNN of the kind used for interstitial lung disease patterns on small CT patches.

After Anthimopoulos et al. (IEEE TMI 2016): five 2x2 convolutions with LeakyReLU, widths growing by a
constant step, then global average pooling and a small dense head. Tiny and fast; a baseline for
texture-like tasks more than for anatomy.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from medclass.models.base import Classifier
from medclass.models.registry import register_model


class ShallowCNN(Classifier):
    """Five 2x2 convolutions (widths ``k * step``), LeakyReLU(0.3), pooled linear head.

    Shapes:
        ``(B, in_chans, H, W)`` -> ``(B, num_classes)``.
    """

    default_cam_layer = "features.conv5"

    def __init__(self, *, in_chans: int = 1, num_classes: int = 2, step: int = 16, drop_rate: float = 0.0) -> None:
        super().__init__(5 * step, num_classes, drop_rate)
        layers: list[tuple[str, nn.Module]] = []
        in_ch = in_chans
        for k in range(1, 6):
            layers.append((f"conv{k}", nn.Sequential(nn.Conv2d(in_ch, k * step, 2), nn.LeakyReLU(0.3))))
            in_ch = k * step
        self.features = nn.Sequential(OrderedDict(layers))


@register_model(
    "shallow_cnn",
    family="shallow",
    sizes=(28, 32, 64),
    min_size=6,
    description="Shallow CNN for lung texture patterns (five 2x2 convolutions, Anthimopoulos et al. 2016)",
)
def shallow_cnn(*, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, **kw) -> ShallowCNN:
    return ShallowCNN(in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, **kw)
