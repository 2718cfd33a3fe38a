"""Batch transforms: pure functions on ``(B, C, *spatial)`` float tensors, thin classes, one ``Compose``.

Randomness always comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from medclass.transforms.batch import (
    Compose,
    RandomAffine,
    RandomIntensity,
    RandomNoise,
    build_augment,
    random_affine,
    random_intensity,
    random_noise,
)

__all__ = [
    "Compose",
    "RandomAffine",
    "RandomIntensity",
    "RandomNoise",
    "build_augment",
    "random_affine",
    "random_intensity",
    "random_noise",
]
