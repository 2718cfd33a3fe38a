"""Image corruptions at five severities, for robustness evaluation in the manner of ImageNet-C and MedMNIST-C.

Each corruption maps a ``uint8`` stack ``(N, C, H, W)`` or ``(N, C, D, H, W)`` to one of the same
shape and dtype; volumes are corrupted slice by slice where the corruption is 2D (blur, JPEG,
pixelation). Severities run from 1 (mild) to 5 (severe); the parameters follow ImageNet-C's
(Hendrycks and Dietterich 2019) where they carry over to grey medical images, with blur widths
scaled to the image size. Random corruptions draw from an explicit generator.

:func:`robustness` evaluates a model under every corruption and severity.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)
_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # Gaussian sigma, fraction of the intensity range
_BLUR = (0.5, 0.75, 1.0, 1.5, 2.0)  # Gaussian sigma in pixels at 64 px and below; scaled up with the side
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # remaining contrast
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added, fraction of the range
_JPEG = (25, 18, 15, 10, 7)  # quality
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # downsampling factor


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _planes(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, [D,] H, W)`` -> ``(P, 1, H, W)``."""
    return x.reshape(-1, 1, x.shape[-2], x.shape[-1])


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise."""
    u = _unit(x)
    return _to_uint8(u + torch.randn(u.shape, generator=generator) * _NOISE[severity - 1])


def blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur of each 2D plane (edges replicated)."""
    sigma = _BLUR[severity - 1] * max(1.0, x.shape[-1] / 64)
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    p = _planes(_unit(x))
    p = F.conv2d(F.pad(p, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    p = F.conv2d(F.pad(p, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return _to_uint8(p.reshape(x.shape))


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Contrast reduced towards each image's mean."""
    u = _unit(x)
    mean = u.mean(dim=tuple(range(1, u.ndim)), keepdim=True)
    return _to_uint8((u - mean) * _CONTRAST[severity - 1] + mean)


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A constant added to every pixel (clipped)."""
    return _to_uint8(_unit(x) + _BRIGHTNESS[severity - 1])


def jpeg(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """JPEG compression of each 2D plane (per channel for colour images)."""
    from PIL import Image

    planes = _planes(x)[:, 0].numpy()
    out = np.empty_like(planes)
    for i, plane in enumerate(planes):
        buf = io.BytesIO()
        Image.fromarray(plane).save(buf, format="JPEG", quality=_JPEG[severity - 1])
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("L"))
    return torch.from_numpy(out).reshape(x.shape)


def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Down-sampling (area) then up-sampling (nearest) of each 2D plane: lost resolution."""
    h, w = x.shape[-2:]
    f = _PIXELATE[severity - 1]
    small = F.interpolate(_planes(_unit(x)), size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
    return _to_uint8(F.interpolate(small, size=(h, w), mode="nearest").reshape(x.shape))


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(x: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to a ``uint8`` stack."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}' (use {', '.join(CORRUPTIONS)})")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1-5, got {severity}")
    return CORRUPTIONS[name](x, severity, torch.Generator().manual_seed(seed))


def robustness(
    score: Callable[[torch.Tensor], dict[str, float]], images: torch.Tensor, *, seed: int = 0
) -> dict[str, Any]:
    """Scores of a model on ``images`` clean and under every corruption and severity.

    Args:
        score: Maps a ``uint8`` stack to metrics, e.g. ``{"auc": ..., "acc": ...}``.
        images: The clean ``uint8`` test stack.
        seed: Seed of the random corruptions.

    Returns:
        ``{"clean": metrics, "corruptions": {name: [metrics at severity 1..5]}, "mean": {metric: mean over all}}``.
    """
    clean = score(images)
    table = {name: [score(corrupt(images, name, s, seed=seed)) for s in SEVERITIES] for name in CORRUPTIONS}
    keys = list(clean)
    mean = {k: float(np.nanmean([m[k] for rows in table.values() for m in rows])) for k in keys}
    return {"clean": clean, "corruptions": table, "mean": mean}
