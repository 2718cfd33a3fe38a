"""Small, fast residual CNNs for the default recipe: a few hundred thousand parameters, 2D or 3D.

Three stages of two residual 3x3 blocks each, halving the resolution between stages. On 28 px
images the 2D model costs about 0.07 GFLOP per image, a fraction of ResNet-18's 0.9.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from medclass.models.base import Classifier, bn_nd, conv_nd
from medclass.models.registry import register_model


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm, ReLU."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__(
            conv_nd(dims)(in_ch, out_ch, 3, stride, 1, bias=False), bn_nd(dims)(out_ch), nn.ReLU(inplace=True)
        )


class ResBlock(nn.Module):
    """``x + BN(conv(ReLU(BN(conv(x)))))`` followed by ReLU."""

    def __init__(self, dims: int, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(dims, ch, ch)
        self.conv2 = conv_nd(dims)(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = bn_nd(dims)(ch)
        nn.init.zeros_(self.bn2.weight)  # start as identity: stabilises short training runs
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.bn2(self.conv2(self.conv1(x))))


class SmallCNN(Classifier):
    """Stem, then per stage: a (strided) transition conv and ``depth`` residual blocks.

    Args:
        dims: 2 or 3 spatial dimensions.
        widths: Channels per stage.
        depth: Residual blocks per stage.
        stem_stride: Stride of the first convolution (2 halves the input at once, for volumes).
        stem_pool: Follow the stem with a 2x max-pool (with ``stem_stride=2``, a quarter of the
            input size reaches the first stage: for 64-224 px images).
        in_chans: Input channels.
        num_classes: Outputs.
        drop_rate: Dropout before the head.

    Shapes:
        ``(B, in_chans, H, W)`` or ``(B, in_chans, D, H, W)`` -> ``(B, num_classes)``.
    """

    default_cam_layer = "features.stage3"

    def __init__(
        self,
        *,
        dims: int = 2,
        widths: tuple[int, ...] = (32, 64, 128),
        depth: int = 1,
        stem_stride: int = 1,
        stem_pool: bool = False,
        in_chans: int = 1,
        num_classes: int = 2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(widths[-1], num_classes, drop_rate)
        layers: list[tuple[str, nn.Module]] = [("stem", ConvBNAct(dims, in_chans, widths[0], stem_stride))]
        if stem_pool:
            pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
            layers.append(("pool", pool(kernel_size=3, stride=2, padding=1)))
        in_ch = widths[0]
        for i, ch in enumerate(widths):
            blocks: list[nn.Module] = [ConvBNAct(dims, in_ch, ch, 1 if i == 0 else 2)]
            blocks += [ResBlock(dims, ch) for _ in range(depth)]
            layers.append((f"stage{i + 1}", nn.Sequential(*blocks)))
            in_ch = ch
        self.default_cam_layer = f"features.stage{len(widths)}"
        self.features = nn.Sequential(OrderedDict(layers))
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _variant(widths_2d: tuple[int, ...], widths_3d: tuple[int, ...], stem_2d: int = 1):
    """A builder using ``widths_2d`` for images and ``widths_3d`` (after a stride-2 stem) for volumes.

    ``stem_2d`` is the 2D stem's total downsampling: 1, or 4 (stride-2 convolution and max-pool).
    """

    def build(
        *, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, spatial_dims: int = 2, **kw
    ) -> SmallCNN:
        if spatial_dims == 3:
            kw.setdefault("widths", widths_3d)
            kw.setdefault("stem_stride", 2)
        else:
            kw.setdefault("widths", widths_2d)
            if stem_2d == 4:
                kw.setdefault("stem_stride", 2)
                kw.setdefault("stem_pool", True)
        return SmallCNN(dims=spatial_dims, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, **kw)

    return build


register_model(
    "smallcnn",
    family="cnn",
    spatial_dims=(2, 3),
    sizes=(28, 64, 128),
    description="Small residual CNN (2D: widths 32/64/128; 3D: 8/16/32/64), the default",
)(_variant((32, 64, 128), (8, 16, 32, 64)))
register_model(
    "smallcnn_tiny",
    family="cnn",
    spatial_dims=(2, 3),
    sizes=(28, 64),
    description="Narrow small residual CNN (2D: widths 8/16/32; 3D: 4/8/16/32): few weights, for DP-SGD",
)(_variant((8, 16, 32), (4, 8, 16, 32)))
register_model(
    "smallcnn_wide",
    family="cnn",
    spatial_dims=(2, 3),
    sizes=(28, 64, 128),
    description="Wider small residual CNN (2D: widths 64/128/256; 3D: 16/32/64/128)",
)(_variant((64, 128, 256), (16, 32, 64, 128)))
register_model(
    "smallcnn_hr",
    family="cnn",
    spatial_dims=(2, 3),
    sizes=(64, 128, 224),
    description="Small residual CNN for 64-224 px images: stride-2 stem and max-pool, then widths 32/64/128",
)(_variant((32, 64, 128), (8, 16, 32, 64), stem_2d=4))
