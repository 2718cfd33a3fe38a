"""A hybrid CNN-transformer for small medical images: convolutional stages, then transformer blocks.

Convolutions learn local texture cheaply at full resolution; after two downsamplings the feature
map (7x7 at 28 px) becomes tokens for a few transformer blocks that relate distant regions. A
depthwise convolution before the blocks adds position information without a fixed-size position
table, so any input size works. The tokens are folded back into a map, so the usual pooled head
and Grad-CAM (on the transformer's output map) apply. In the spirit of CvT and CoAtNet (Wu et al.
2021; Dai et al. 2021), kept small for CPU training.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from medclass.models.base import Classifier
from medclass.models.registry import register_model
from medclass.models.smallcnn import ConvBNAct, ResBlock


class TokenMixer(nn.Module):
    """``(B, C, h, w)`` -> same shape: depthwise-conv position encoding, then transformer blocks on the tokens."""

    def __init__(self, dim: int, depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, drop: float = 0.0) -> None:
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout=drop, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        b, c, h, w = x.shape
        tokens = self.norm(self.blocks(x.flatten(2).transpose(1, 2)))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class HybridNet(Classifier):
    """Stem, two residual stages (each halving the size), transformer blocks on the resulting map.

    Args:
        in_chans: Input channels.
        num_classes: Outputs.
        widths: Channels of the stem/first stage and of the second stage (the token dimension).
        depth: Transformer blocks.
        drop_rate: Dropout before the head (and inside the transformer).

    Shapes:
        ``(B, in_chans, H, W)`` -> ``(B, num_classes)``.
    """

    default_cam_layer = "features.transformer"

    def __init__(
        self,
        *,
        in_chans: int = 1,
        num_classes: int = 2,
        widths: tuple[int, int] = (32, 128),
        depth: int = 2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(widths[1], num_classes, drop_rate)
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("stem", ConvBNAct(2, in_chans, widths[0])),
                    ("stage1", nn.Sequential(ConvBNAct(2, widths[0], widths[0], 2), ResBlock(2, widths[0]))),
                    ("stage2", nn.Sequential(ConvBNAct(2, widths[0], widths[1], 2), ResBlock(2, widths[1]))),
                    ("transformer", TokenMixer(widths[1], depth=depth, drop=drop_rate)),
                ]
            )
        )


@register_model(
    "hybrid_cnn_vit",
    family="hybrid",
    sizes=(28, 64, 128),
    min_size=8,
    description="Hybrid CNN-transformer: two residual conv stages, then 2 transformer blocks on the 1/4-size map",
)
def hybrid_cnn_vit(*, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, **kw) -> HybridNet:
    return HybridNet(in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, **kw)
