"""ResNet-18/50 (He et al., CVPR 2016) as used by the MedMNIST v2 benchmark, in 2D and 3D.

The ``_28`` variants follow MedMNIST's small-image form: a 3x3 stride-1 stem and no max-pool, so a
28 px input keeps a 4x4 map at the last stage. The ``_224`` variants use the standard 7x7 stride-2
stem with max-pool. The ``_3d`` variants are the ``_28`` form with 3D convolutions.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from medclass.models.base import Classifier, bn_nd, conv_nd
from medclass.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, dims: int, in_ch: int, ch: int, stride: int) -> None:
        super().__init__()
        conv, bn = conv_nd(dims), bn_nd(dims)
        self.conv1 = conv(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = bn(ch)
        self.conv2 = conv(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = bn(ch)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(conv(in_ch, ch, 1, stride, bias=False), bn(ch))
            if stride != 1 or in_ch != ch
            else nn.Identity()
        )

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a shortcut."""

    expansion = 4

    def __init__(self, dims: int, in_ch: int, ch: int, stride: int) -> None:
        super().__init__()
        conv, bn = conv_nd(dims), bn_nd(dims)
        out_ch = ch * self.expansion
        self.conv1 = conv(in_ch, ch, 1, bias=False)
        self.bn1 = bn(ch)
        self.conv2 = conv(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = bn(ch)
        self.conv3 = conv(ch, out_ch, 1, bias=False)
        self.bn3 = bn(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(conv(in_ch, out_ch, 1, stride, bias=False), bn(out_ch))
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.shortcut(x))


class ResNet(Classifier):
    """ResNet for 2D or 3D inputs.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        dims: Spatial dimensions (2 or 3).
        small_input: 3x3 stride-1 stem without max-pool (MedMNIST 28 px form).
        in_chans: Input channels.
        num_classes: Outputs.
        drop_rate: Dropout before the head.

    Shapes:
        ``(B, in_chans, H, W)`` (or ``(B, in_chans, D, H, W)``) -> ``(B, num_classes)``.
    """

    default_cam_layer = "features.layer4"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        *,
        dims: int = 2,
        small_input: bool = True,
        in_chans: int = 1,
        num_classes: int = 2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(512 * block.expansion, num_classes, drop_rate)
        conv, bn = conv_nd(dims), bn_nd(dims)
        if small_input:
            stem = [conv(in_chans, 64, 3, 1, 1, bias=False), bn(64), nn.ReLU(inplace=True)]
        else:
            pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
            stem = [conv(in_chans, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(inplace=True), pool(3, 2, 1)]
        stages: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(*stem))]
        in_ch = 64
        for i, (n, ch) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(dims, in_ch, ch, 2 if (j == 0 and i > 0) else 1))
                in_ch = ch * block.expansion
            stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        self.features = nn.Sequential(OrderedDict(stages))
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _variant(block, layers, dims, small):
    def build(*, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, **kw) -> ResNet:
        return ResNet(
            block,
            layers,
            dims=dims,
            small_input=small,
            in_chans=in_chans,
            num_classes=num_classes,
            drop_rate=drop_rate,
            **kw,
        )

    return build


for _depth, _block, _layers in ((18, BasicBlock, (2, 2, 2, 2)), (50, Bottleneck, (3, 4, 6, 3))):
    register_model(
        f"resnet{_depth}_28",
        family="resnet",
        sizes=(28, 64),
        description=f"ResNet-{_depth}, MedMNIST 28 px form (3x3 stem, no max-pool)",
    )(_variant(_block, _layers, 2, True))
    register_model(
        f"resnet{_depth}_224",
        family="resnet",
        sizes=(64, 128, 224),
        description=f"ResNet-{_depth}, standard ImageNet form (7x7 stem, max-pool)",
    )(_variant(_block, _layers, 2, False))
    register_model(
        f"resnet{_depth}_3d",
        family="resnet",
        spatial_dims=3,
        sizes=(28, 64),
        description=f"ResNet-{_depth} with 3D convolutions (3x3x3 stem, no max-pool)",
    )(_variant(_block, _layers, 3, True))
