"""Gamma, blur, speckle and salt-and-pepper: shapes, seeds, identities and known values, 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from medclass.config import AugmentConfig
from medclass.transforms import build_augment
from medclass.transforms.intensity import Random, random_blur, random_gamma, random_salt_pepper, random_speckle

FUNCS = {
    "gamma": (random_gamma, {"gamma": 0.4}),
    "blur": (random_blur, {"sigma": 1.5}),
    "speckle": (random_speckle, {"sigma": 0.2}),
    "salt_pepper": (random_salt_pepper, {"amount": 0.05}),
}


def _batch(dims: int, b: int = 4) -> torch.Tensor:
    shape = (b, 2, 10, 12) if dims == 2 else (b, 2, 6, 8, 8)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(FUNCS))
def test_shape_dtype_seed_and_zero_strength(name, dims):
    fn, kw = FUNCS[name]
    x = _batch(dims)
    a = fn(x, torch.Generator().manual_seed(1), **kw)
    b = fn(x, torch.Generator().manual_seed(1), **kw)
    c = fn(x, torch.Generator().manual_seed(2), **kw)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero = {k: 0.0 for k in kw}
    assert fn(x, torch.Generator().manual_seed(1), **zero) is x


def test_gamma_known_value():
    x = torch.full((1, 1, 2, 2), 0.0)  # u = 0.5
    y = random_gamma(x, torch.Generator().manual_seed(3), gamma=0.5)
    g = torch.exp((torch.rand(1, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.5)
    assert torch.allclose(y, torch.full_like(x, 2 * 0.5 ** float(g) - 1))


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_keeps_constants_and_means_and_smooths(dims):
    const = torch.full(_batch(dims).shape, 0.3)
    assert torch.allclose(random_blur(const, torch.Generator().manual_seed(0), sigma=2.0), const, atol=1e-6)
    x = _batch(dims, b=8)
    y = random_blur(x, torch.Generator().manual_seed(0), sigma=2.0)
    assert y.var() < x.var()
    # compare one sample against a naive blur with the same drawn sigma along each axis
    sig = torch.rand(8, generator=torch.Generator().manual_seed(0)) * 2.0
    s = max(float(sig[0]), 1e-3)
    radius = 6
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = k / k.sum()
    ref = x[0]
    for axis in range(1, dims + 1):
        n = ref.shape[axis]
        idx = (torch.arange(n)[:, None] + t.long()[None, :]).clamp(0, n - 1)  # replicate edges
        moved = ref.movedim(axis, -1)
        ref = (moved[..., idx] * k).sum(-1).movedim(-1, axis)
    assert torch.allclose(y[0], ref, atol=1e-5)


def test_salt_pepper_share_and_values():
    x = torch.zeros(2, 1, 100, 100)
    y = random_salt_pepper(x, torch.Generator().manual_seed(0), amount=0.2)
    share = torch.rand(2, generator=torch.Generator().manual_seed(0)) * 0.2
    changed = (y != 0).flatten(1).float().mean(1)
    assert torch.allclose(changed, share, atol=0.01)
    assert set(torch.unique(y).tolist()) <= {-1.0, 0.0, 1.0}


def test_speckle_is_multiplicative():
    x = torch.full((3, 1, 50, 50), -1.0)  # u = 0: speckle cannot change black
    assert torch.equal(random_speckle(x, torch.Generator().manual_seed(0), sigma=0.5), x)


def test_build_augment_includes_the_new_steps():
    cfg = AugmentConfig(enabled=True, gamma=0.3, blur=1.0, speckle=0.1, salt_pepper=0.01)
    aug = build_augment(cfg)
    assert [t.fn.__name__ for t in aug.transforms if isinstance(t, Random)] == [
        "random_gamma",
        "random_blur",
        "random_speckle",
        "random_salt_pepper",
    ]
