"""Spatial batch augmentations beyond the affine: random resized crop, elastic deformation, MRI bias field.

Each function draws its parameters per sample from an explicit generator and works on 2D
``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` float batches (normalised to about ``[-1, 1]``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _identity_grid(x: torch.Tensor) -> torch.Tensor:
    """``(B, *spatial, dims)`` sampling grid of the identity transform (``align_corners=False``)."""
    b, dims = x.shape[0], x.ndim - 2
    theta = torch.zeros(b, dims, dims + 1, dtype=x.dtype)
    theta[:, :, :dims] = torch.eye(dims, dtype=x.dtype)
    return F.affine_grid(theta, list(x.shape), align_corners=False)


def random_resized_crop(
    x: torch.Tensor, generator: torch.Generator, *, min_area: float = 1.0, max_aspect: float = 1.0
) -> torch.Tensor:
    """Crop a random box covering ``[min_area, 1]`` of the image and resize it back to full size.

    Args:
        x: Float images.
        generator: Source of randomness.
        min_area: Smallest share of the image kept (1 = off).
        max_aspect: Largest aspect-ratio change (``exp(U(-log a, log a))`` on the first axis; 2D only).

    Returns:
        Same shape, bilinear (trilinear) resampling.
    """
    if min_area >= 1.0:
        return x
    b, dims = x.shape[0], x.ndim - 2
    area = torch.rand(b, generator=generator) * (1 - min_area) + min_area
    side = area.pow(1 / dims).unsqueeze(1).repeat(1, dims)
    if dims == 2 and max_aspect > 1:
        log_a = (torch.rand(b, generator=generator) * 2 - 1) * math.log(max_aspect)
        r = torch.exp(log_a / 2)
        side = torch.stack([side[:, 0] * r, side[:, 1] / r], 1).clamp(max=1.0)
    centre = (torch.rand(b, dims, generator=generator) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, dims, dims + 1, dtype=x.dtype)
    theta[:, :, :dims] = torch.diag_embed(side).to(x.dtype)
    theta[:, :, dims] = centre.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_elastic(
    x: torch.Tensor, generator: torch.Generator, *, magnitude: float = 0.0, grid: int = 4
) -> torch.Tensor:
    """Smooth random deformation: a coarse random displacement field, upsampled cubically.

    Args:
        x: Float images.
        generator: Source of randomness.
        magnitude: Largest displacement as a fraction of the image side (0 = off).
        grid: Control points per axis of the coarse field.

    Returns:
        Same shape; borders replicate the edge.
    """
    if not magnitude:
        return x
    b, dims = x.shape[0], x.ndim - 2
    coarse = (torch.rand(b, dims, *([grid] * dims), generator=generator) * 2 - 1) * (2 * magnitude)
    mode = "bicubic" if dims == 2 else "trilinear"
    field = F.interpolate(coarse, size=x.shape[2:], mode=mode, align_corners=True).to(x.dtype)
    field = field.movedim(1, -1).flip(-1)  # grid_sample wants (x, y[, z]) = last axis first
    return F.grid_sample(x, _identity_grid(x) + field, mode="bilinear", padding_mode="border", align_corners=False)


def random_bias_field(x: torch.Tensor, generator: torch.Generator, *, strength: float = 0.0) -> torch.Tensor:
    """Multiply ``u = (x + 1) / 2`` by a smooth field ``exp(c . poly)`` (MRI intensity inhomogeneity).

    The field is a random combination of the linear and quadratic monomials of the normalised
    coordinates, with coefficients uniform in ``[-strength, strength]``.
    """
    if not strength:
        return x
    b, dims = x.shape[0], x.ndim - 2
    coords = _identity_grid(x)  # (B, *spatial, dims) in [-1, 1]
    terms = [coords[..., i] for i in range(dims)]
    terms += [coords[..., i] * coords[..., j] for i in range(dims) for j in range(i, dims)]
    basis = torch.stack(terms, -1)  # (B, *spatial, T)
    coef = (torch.rand(b, basis.shape[-1], generator=generator) * 2 - 1) * strength
    log_field = (basis * coef.view(b, *([1] * dims), -1).to(x.dtype)).sum(-1)
    u = (x + 1) / 2
    return u * torch.exp(log_field).unsqueeze(1) * 2 - 1
