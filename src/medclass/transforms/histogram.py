"""Histogram equalisation and CLAHE on batches of ``uint8`` images, 2D and 3D (slice by slice).

Both work on whole batches at once: one ``bincount`` builds every histogram of the batch. As
preprocessing (``data.equalize``) they run inside :func:`medclass.training.loop.to_input`, so training,
evaluation and prediction see the same pixels; as augmentation (``augment.equalize``) a random
share of training images gets CLAHE.

CLAHE (Zuiderveld 1994): each image is cut into ``tiles x tiles`` regions, each region's histogram
is clipped at ``clip_limit`` times its mean bin count (the excess spread evenly over all bins),
and each pixel's new value interpolates bilinearly between the mappings of the four nearest
region centres.
"""

from __future__ import annotations

from typing import Any

import torch

from medclass.errors import ConfigError

LEVELS = 256
EQUALIZE_METHODS = ("none", "hist", "clahe")


def _as_planes(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(B, C, H, W)`` or ``(B, C, D, H, W)`` -> ``(P, H, W)`` planes, plus the original shape."""
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-2], x.shape[-1]), tuple(x.shape)


def _histograms(planes: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """``(groups, 256)`` counts of ``planes`` (``int64`` levels) per group id of each pixel."""
    idx = (group * LEVELS + planes).reshape(-1)
    return torch.bincount(idx, minlength=groups * LEVELS).view(groups, LEVELS).float()


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Global histogram equalisation of each channel of each image (each slice of volumes).

    The mapping is ``255 * (cdf(v) - cdf_min) / (n - cdf_min)``, as in most image libraries; a
    constant plane is returned unchanged.

    Args:
        x: ``uint8`` ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

    Returns:
        ``uint8`` tensor of the same shape.
    """
    planes, shape = _as_planes(x)
    p, h, w = planes.shape
    levels = planes.long()
    group = torch.arange(p).view(p, 1, 1).expand(p, h, w)
    cdf = _histograms(levels, group, p).cumsum(1)
    first = torch.where(cdf > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)  # pixels at the minimum
    span = h * w - first
    lut = ((cdf - first).clamp(min=0) * (LEVELS - 1) / span.clamp(min=1)).round()
    identity = torch.arange(LEVELS, dtype=lut.dtype).expand(p, -1)
    lut = torch.where(span > 0, lut, identity)  # a constant plane stays as it is
    out = lut.gather(1, levels.view(p, -1)).view(p, h, w)
    return out.to(torch.uint8).reshape(shape)


def _axis_weights(n: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``n`` pixels cut into ``tiles`` regions: lower/upper region index and upper weight per pixel."""
    pos = (torch.arange(n, dtype=torch.float32) + 0.5) * tiles / n - 0.5  # in region-centre units
    lo = pos.floor().clamp(0, tiles - 1)
    hi = (lo + 1).clamp(max=tiles - 1)
    weight = (pos - lo).clamp(0, 1)
    return lo.long(), hi.long(), weight


def clahe(x: torch.Tensor, *, clip_limit: float = 2.0, tiles: int = 8) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation of each channel of each image (or slice).

    Args:
        x: ``uint8`` ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        clip_limit: Histogram clip as a multiple of the mean bin count (at least one count per
            bin, so small regions are clipped hard: use 2-4 tiles on 28 px images); ``<= 0``
            disables clipping (plain adaptive equalisation). 2-4 are usual for X-ray.
        tiles: Regions per side (fewer where the image has fewer pixels than that).

    Returns:
        ``uint8`` tensor of the same shape.
    """
    planes, shape = _as_planes(x)
    p, h, w = planes.shape
    ty, tx = max(1, min(tiles, h)), max(1, min(tiles, w))
    # Region of each pixel: regions as equal as integer sizes allow.
    row = (torch.arange(h) * ty // h).view(1, h, 1)
    col = (torch.arange(w) * tx // w).view(1, 1, w)
    group = (torch.arange(p).view(p, 1, 1) * ty + row) * tx + col
    levels = planes.long()
    hist = _histograms(levels, group, p * ty * tx)
    count = hist.sum(1, keepdim=True)
    if clip_limit > 0:
        limit = (clip_limit * count / LEVELS).clamp(min=1)
        excess = (hist - limit).clamp(min=0).sum(1, keepdim=True)
        hist = hist.clamp(max=limit) + excess / LEVELS
    lut = (hist.cumsum(1) * (LEVELS - 1) / count.clamp(min=1)).view(p, ty, tx, LEVELS)
    y0, y1, wy = _axis_weights(h, ty)
    x0, x1, wx = _axis_weights(w, tx)
    flat = lut.view(p, ty * tx * LEVELS)

    def mapped(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        idx = (ys.view(1, h, 1) * tx + xs.view(1, 1, w)) * LEVELS + levels
        return flat.gather(1, idx.view(p, -1)).view(p, h, w)

    wy, wx = wy.view(1, h, 1), wx.view(1, 1, w)
    top = mapped(y0, x0) * (1 - wx) + mapped(y0, x1) * wx
    bottom = mapped(y1, x0) * (1 - wx) + mapped(y1, x1) * wx
    out = top * (1 - wy) + bottom * wy
    return out.round().clamp(0, LEVELS - 1).to(torch.uint8).reshape(shape)


def equalize_options(method: str, *, clip_limit: float = 2.0, tiles: int = 8) -> dict[str, Any] | None:
    """The checkpoint's ``preprocessing["equalize"]`` entry for a recipe's ``data.equalize``."""
    if method not in EQUALIZE_METHODS:
        raise ConfigError(f"data.equalize: unknown method '{method}' (use {', '.join(EQUALIZE_METHODS)})")
    if method == "none":
        return None
    if method == "hist":
        return {"method": "hist"}
    return {"method": "clahe", "clip_limit": float(clip_limit), "tiles": int(tiles)}


def apply_equalize(images: torch.Tensor, options: dict[str, Any] | None) -> torch.Tensor:
    """Apply a stored ``equalize`` entry (``None``: unchanged) to ``uint8`` images."""
    if not options:
        return images
    if options["method"] == "hist":
        return equalize(images)
    return clahe(images, clip_limit=options["clip_limit"], tiles=options["tiles"])


def random_clahe(
    x: torch.Tensor, generator: torch.Generator, *, p: float = 0.0, clip_limit: float = 2.0, tiles: int = 4
) -> torch.Tensor:
    """CLAHE on a random share ``p`` of the images of a normalised float batch (about ``[-1, 1]``).

    Each chosen image is mapped to ``uint8`` over its own range, equalised, and mapped back to
    that range, so the augmentation changes local contrast, not the overall intensity scale.
    """
    if not p:
        return x
    chosen = torch.rand(x.shape[0], generator=generator) < p
    if not chosen.any():
        return x
    sub = x[chosen]
    dims = tuple(range(1, sub.ndim))
    lo, hi = sub.amin(dim=dims, keepdim=True), sub.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp(min=1e-6)
    u8 = ((sub - lo) / span * (LEVELS - 1)).round().to(torch.uint8)
    eq = clahe(u8, clip_limit=clip_limit, tiles=tiles).to(x.dtype) / (LEVELS - 1) * span + lo
    out = x.clone()
    out[chosen] = eq
    return out
