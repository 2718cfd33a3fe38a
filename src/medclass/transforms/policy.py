"""An automatic augmentation policy in the manner of TrivialAugment (Müller and Hutter, 2021).

Each sample gets one operation, chosen uniformly from a fixed list, at a random strength (every
operation draws its own per-sample strength up to the maximum listed here). No search, no
per-dataset tuning: the same policy serves every modality. Horizontal flips are not in the list,
because laterality matters on chest X-rays; recipes add them where they are safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medclass.transforms.batch import random_affine, random_intensity, random_noise
from medclass.transforms.intensity import random_blur, random_gamma
from medclass.transforms.spatial import random_elastic, random_resized_crop

Op = tuple[Callable[..., torch.Tensor], dict[str, Any]]

#: The operations and their largest strengths, on images normalised to about [-1, 1].
TRIVIAL_OPS: dict[str, Op] = {
    "identity": (lambda x, g: x, {}),
    "rotate": (random_affine, {"rotate": 20.0}),
    "translate": (random_affine, {"translate": 0.1}),
    "scale": (random_affine, {"scale": 0.15}),
    "crop": (random_resized_crop, {"min_area": 0.7}),
    "elastic": (random_elastic, {"magnitude": 0.03}),
    "brightness": (random_intensity, {"brightness": 0.15}),
    "contrast": (random_intensity, {"contrast": 0.3}),
    "gamma": (random_gamma, {"gamma": 0.4}),
    "blur": (random_blur, {"sigma": 1.0}),
    "noise": (random_noise, {"sigma": 0.1}),
}


def random_policy(x: torch.Tensor, generator: torch.Generator, *, ops: dict[str, Op] | None = None) -> torch.Tensor:
    """Apply one randomly chosen operation per sample.

    Args:
        x: ``(B, C, *spatial)`` float images.
        generator: Source of randomness (the choice and each operation's strengths).
        ops: Operations to choose from (default :data:`TRIVIAL_OPS`).

    Returns:
        Same shape.
    """
    ops = TRIVIAL_OPS if ops is None else ops
    table = list(ops.values())
    choice = torch.randint(len(table), (x.shape[0],), generator=generator)
    out = x.clone()
    for k, (fn, kwargs) in enumerate(table):
        idx = torch.nonzero(choice == k).flatten()
        if len(idx):
            out[idx] = fn(x[idx], generator, **kwargs)
    return out
