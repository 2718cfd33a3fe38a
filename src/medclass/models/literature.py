"""The classic and current architectures of the medical imaging literature, built by timm.

VGG-11/16 with batch norm (Simonyan and Zisserman 2015), DenseNet-121 (Huang et al. 2017; CheXNet's
backbone, Rajpurkar et al. 2017), Inception-v3 (Szegedy et al. 2016), EfficientNet-B0 (Tan and Le
2019), ConvNeXt-Atto (Liu et al. 2022; the smallest ConvNeXt) and ViT-Tiny/Small (Dosovitskiy et
al. 2021) with a patch size suited to the input: 4 px up to 32 px images, 8 px up to 96 px, else
16 px. Each entry records the smallest input it accepts; training refuses smaller images with an
error that says which ``--image-size`` to use. ImageNet weights come from timm (``pretrained``), or
offline from ``$MEDCLASS_WEIGHTS_DIR``.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from medclass.models.registry import build_timm, register_model

# name, timm architecture, family, sizes, smallest input, description
_ZOO = (
    ("vgg11_bn", "vgg11_bn", "vgg", (32, 64, 224), 32, "VGG-11 with batch norm"),
    ("vgg16_bn", "vgg16_bn", "vgg", (32, 64, 224), 32, "VGG-16 with batch norm"),
    ("densenet121", "densenet121", "densenet", (32, 64, 224), 32, "DenseNet-121, CheXNet's backbone"),
    ("inception_v3", "inception_v3", "inception", (75, 128, 299), 75, "Inception-v3 (needs at least 75 px)"),
    ("efficientnet_b0", "efficientnet_b0", "efficientnet", (28, 64, 224), 28, "EfficientNet-B0"),
    ("convnext_atto", "convnext_atto", "convnext", (32, 64, 224), 32, "ConvNeXt-Atto, the smallest ConvNeXt"),
)


def _timm_builder(arch: str, *, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, **kw) -> nn.Module:
    return build_timm(arch, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, **kw)


for _name, _arch, _family, _sizes, _min, _desc in _ZOO:
    register_model(_name, family=_family, sizes=_sizes, min_size=_min, timm_arch=_arch, description=_desc)(
        partial(_timm_builder, _arch)
    )


def patch_size_for(img_size: int) -> int:
    """ViT patch size for an input side: 4 px up to 32, 8 px up to 96, else 16 (7x7 to 14x14 tokens)."""
    return 4 if img_size <= 32 else 8 if img_size <= 96 else 16


def _vit(
    arch: str, *, in_chans: int = 1, num_classes: int = 2, drop_rate: float = 0.0, img_size: int = 28, **kw
) -> nn.Module:
    model = build_timm(
        arch,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
        img_size=img_size,
        patch_size=patch_size_for(img_size),
        **kw,
    )
    model.default_cam_layer = f"blocks.{len(model.blocks) - 1}.norm1"  # tokens before the last block's attention
    return model


for _name, _arch, _desc in (
    ("vit_tiny", "vit_tiny_patch16_224", "ViT-Tiny, patch size chosen for the input (4/8/16 px)"),
    ("vit_small", "vit_small_patch16_224", "ViT-Small, patch size chosen for the input (4/8/16 px)"),
):
    register_model(
        _name, family="vit", sizes=(28, 64, 224), min_size=16, timm_arch=_arch, takes_img_size=True, description=_desc
    )(partial(_vit, _arch))
