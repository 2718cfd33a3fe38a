"""More batch augmentations on normalised images (about ``[-1, 1]``): gamma, blur, speckle, salt-and-pepper.

Like :mod:`medclass.transforms.batch`, each function draws its parameters per sample from an
explicit generator and works on 2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` float batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def _per_sample(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.view((x.shape[0],) + (1,) * (x.ndim - 1))


def random_gamma(x: torch.Tensor, generator: torch.Generator, *, gamma: float = 0.0) -> torch.Tensor:
    """Gamma curve ``y = u^g`` on ``u = (x + 1) / 2``, with ``log g`` uniform in ``[-gamma, gamma]``.

    Values outside ``[-1, 1]`` are clipped to it first. ``gamma = 0`` returns ``x``.
    """
    if not gamma:
        return x
    g = torch.exp((torch.rand(x.shape[0], generator=generator) * 2 - 1) * gamma)
    u = ((x.clamp(-1, 1) + 1) / 2).pow(_per_sample(x, g).to(x.dtype))
    return u * 2 - 1


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, 2 * radius + 1)`` normalised 1-D Gaussians; a sigma of 0 gives the identity kernel."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigmas.clamp(min=1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    return k / k.sum(1, keepdim=True)


def random_blur(x: torch.Tensor, generator: torch.Generator, *, sigma: float = 0.0) -> torch.Tensor:
    """Gaussian blur with a per-sample sigma (pixels) drawn from ``[0, sigma]``, separable, edges replicated."""
    if not sigma:
        return x
    b, c, dims = x.shape[0], x.shape[1], x.ndim - 2
    radius = max(1, math.ceil(3 * sigma))
    k = _gaussian_kernels(torch.rand(b, generator=generator) * sigma, radius).to(x.dtype)
    k = k.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per channel of each sample
    conv = F.conv2d if dims == 2 else F.conv3d
    y = x.reshape(1, b * c, *x.shape[2:])
    for axis in range(dims):
        shape = [b * c, 1] + [1] * dims
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        y = conv(F.pad(y, pad, mode="replicate"), k.view(shape), groups=b * c)
    return y.reshape(x.shape)


def random_speckle(x: torch.Tensor, generator: torch.Generator, *, sigma: float = 0.0) -> torch.Tensor:
    """Multiplicative (speckle) noise, as in ultrasound: ``u * (1 + s * n)`` on ``u = (x + 1) / 2``.

    ``s`` is drawn per sample from ``[0, sigma]``; ``n`` is standard normal per pixel.
    """
    if not sigma:
        return x
    s = _per_sample(x, torch.rand(x.shape[0], generator=generator) * sigma).to(x.dtype)
    u = (x + 1) / 2
    return (u * (1 + s * torch.randn(x.shape, generator=generator, dtype=x.dtype))) * 2 - 1


def random_salt_pepper(x: torch.Tensor, generator: torch.Generator, *, amount: float = 0.0) -> torch.Tensor:
    """Set a per-sample share drawn from ``[0, amount]`` of the pixels to -1 or 1 (even odds)."""
    if not amount:
        return x
    share = _per_sample(x, torch.rand(x.shape[0], generator=generator) * amount)
    hit = torch.rand(x.shape, generator=generator) < share
    salt = torch.rand(x.shape, generator=generator) < 0.5
    return torch.where(hit, torch.where(salt, 1.0, -1.0).to(x.dtype), x)


class Random:
    """Thin class over any of these functions: ``Random(random_gamma, gamma=0.3)(x, generator)``."""

    def __init__(self, fn: Callable[..., torch.Tensor], **kwargs: Any) -> None:
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.fn(x, generator, **self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"Random({self.fn.__name__}, {args})"
