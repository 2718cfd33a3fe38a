"""Augmentations applied to whole batches on the CPU, 2D and 3D alike.

Each ``random_*`` function draws one set of parameters per sample from ``generator`` and applies
them in a single vectorised call, so augmentation costs a small share of a training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from medclass.config import AugmentConfig
from medclass.errors import ConfigError

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (hi - lo) + lo


def _rotation_3d(angles: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` Euler angles (radians) -> ``(B, 3, 3)`` rotation matrices."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    rotate: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    hflip: bool = False,
    vflip: bool = False,
) -> torch.Tensor:
    """Random rotation, translation, isotropic scaling and flips, one draw per sample.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` float images.
        generator: Source of randomness.
        rotate: Maximum rotation in degrees (about every axis for volumes).
        translate: Maximum shift as a fraction of the image side.
        scale: Maximum relative zoom (0.1 = 0.9x..1.1x).
        hflip: Flip the last axis with probability 0.5.
        vflip: Flip the second-last axis with probability 0.5.

    Returns:
        Tensor of the same shape; border pixels are filled by replicating the edge.
    """
    b, dims = x.shape[0], x.ndim - 2
    if not (rotate or translate or scale or hflip or vflip):
        return x
    theta_deg = _uniform(b * (1 if dims == 2 else 3), -rotate, rotate, generator).view(b, -1)
    angles = theta_deg * math.pi / 180
    if dims == 2:
        c, s = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
        mat = torch.stack([c, -s, s, c], 1).view(b, 2, 2)
    else:
        mat = _rotation_3d(angles)
    zoom = _uniform(b, 1 - scale, 1 + scale, generator).view(b, 1, 1)
    flips = torch.ones(b, dims)
    if hflip:
        flips[:, 0] = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    if vflip:
        flips[:, 1] = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    mat = mat / zoom * flips.unsqueeze(1)
    shift = _uniform(b * dims, -2 * translate, 2 * translate, generator).view(b, dims, 1)
    theta = torch.cat([mat, shift], dim=2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_intensity(
    x: torch.Tensor, generator: torch.Generator, *, brightness: float = 0.0, contrast: float = 0.0
) -> torch.Tensor:
    """Random brightness offset and contrast factor per sample, on images scaled to about [-1, 1].

    Args:
        x: ``(B, C, ...)`` float images.
        generator: Source of randomness.
        brightness: Maximum additive offset (fraction of the [-1, 1] range / 2).
        contrast: Maximum relative contrast change around the per-image mean.
    """
    if not (brightness or contrast):
        return x
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)
    factor = _uniform(b, 1 - contrast, 1 + contrast, generator).view(shape)
    offset = _uniform(b, -2 * brightness, 2 * brightness, generator).view(shape)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - mean) * factor + mean + offset


def random_noise(x: torch.Tensor, generator: torch.Generator, *, sigma: float = 0.0) -> torch.Tensor:
    """Add Gaussian noise with a per-sample standard deviation drawn from ``[0, sigma]``."""
    if not sigma:
        return x
    b = x.shape[0]
    std = _uniform(b, 0, sigma, generator).view((b,) + (1,) * (x.ndim - 1))
    return x + torch.randn(x.shape, generator=generator) * std


class RandomAffine:
    """Thin class over :func:`random_affine`."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_affine(x, generator, **self.kwargs)


class RandomIntensity:
    """Thin class over :func:`random_intensity`."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_intensity(x, generator, **self.kwargs)


class RandomNoise:
    """Thin class over :func:`random_noise`."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_noise(x, generator, sigma=self.sigma)


class Compose:
    """Apply transforms in order, each with the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __len__(self) -> int:
        return len(self.transforms)


def build_augment(cfg: AugmentConfig) -> Compose:
    """The training augmentation described by a recipe's ``augment`` section (empty when disabled)."""
    if not cfg.enabled:
        return Compose([])
    steps: list[Transform] = []
    if cfg.rotate or cfg.translate or cfg.scale or cfg.hflip or cfg.vflip:
        steps.append(
            RandomAffine(rotate=cfg.rotate, translate=cfg.translate, scale=cfg.scale, hflip=cfg.hflip, vflip=cfg.vflip)
        )
    if cfg.brightness or cfg.contrast:
        steps.append(RandomIntensity(brightness=cfg.brightness, contrast=cfg.contrast))
    from medclass.transforms.histogram import random_clahe
    from medclass.transforms.intensity import Random, random_blur, random_gamma, random_salt_pepper, random_speckle
    from medclass.transforms.policy import random_policy
    from medclass.transforms.spatial import random_bias_field, random_elastic, random_resized_crop

    if cfg.crop < 1.0:
        steps.append(Random(random_resized_crop, min_area=cfg.crop))
    if cfg.elastic:
        steps.append(Random(random_elastic, magnitude=cfg.elastic))
    if cfg.policy not in ("none", "trivial"):
        raise ConfigError(f"augment.policy: unknown policy '{cfg.policy}' (use none or trivial)")
    if cfg.policy == "trivial":
        steps.append(Random(random_policy))
    if cfg.bias_field:
        steps.append(Random(random_bias_field, strength=cfg.bias_field))
    if cfg.equalize:
        steps.append(Random(random_clahe, p=cfg.equalize))
    if cfg.gamma:
        steps.append(Random(random_gamma, gamma=cfg.gamma))
    if cfg.blur:
        steps.append(Random(random_blur, sigma=cfg.blur))
    if cfg.noise:
        steps.append(RandomNoise(cfg.noise))
    if cfg.speckle:
        steps.append(Random(random_speckle, sigma=cfg.speckle))
    if cfg.salt_pepper:
        steps.append(Random(random_salt_pepper, amount=cfg.salt_pepper))
    return Compose(steps)
