"""Batch augmentations: shapes and dtypes, seeded randomness, and exact identities."""

from __future__ import annotations

import pytest
import torch

from medclass.config import AugmentConfig
from medclass.transforms import (
    Compose,
    RandomAffine,
    RandomIntensity,
    RandomNoise,
    build_augment,
    random_affine,
    random_intensity,
    random_noise,
)

SHAPES = {2: (4, 3, 12, 12), 3: (3, 1, 6, 8, 8)}
FULL = AugmentConfig(
    enabled=True, translate=0.1, rotate=15, scale=0.1, hflip=True, vflip=True, brightness=0.1, contrast=0.2, noise=0.05
)


def _x(dims: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(SHAPES[dims], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


TRANSFORMS = {
    "affine": RandomAffine(rotate=20, translate=0.1, scale=0.1, hflip=True, vflip=True),
    "intensity": RandomIntensity(brightness=0.1, contrast=0.2),
    "noise": RandomNoise(0.1),
    "compose": build_augment(FULL),
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_shape_dtype_and_seed(name, dims):
    t = TRANSFORMS[name]
    x = _x(dims)
    before = x.clone()
    y = t(x, _g(1))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert torch.equal(x, before)  # input untouched
    assert not torch.equal(y, x)
    assert torch.equal(t(x, _g(1)), y)  # same seed, same output
    assert not torch.equal(t(x, _g(2)), y)
    g = _g(1)
    assert not torch.equal(t(x, g), t(x, g))  # the generator advances


def test_compose_steps():
    assert len(build_augment(FULL)) == 3
    assert len(build_augment(AugmentConfig(enabled=False, rotate=30))) == 0
    assert len(build_augment(AugmentConfig(enabled=True, brightness=0.1))) == 1
    x = _x(2)
    assert build_augment(AugmentConfig(enabled=False, rotate=30))(x, _g()) is x
    double = Compose([RandomNoise(0.1), RandomNoise(0.1)])
    g = _g(5)
    expected = random_noise(random_noise(x, g, sigma=0.1), g, sigma=0.1)
    assert torch.equal(double(x, _g(5)), expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_zero_strength_is_identity(dims):
    x = _x(dims)
    g = _g()
    state = g.get_state()
    assert random_affine(x, g) is x
    assert random_affine(x, g, rotate=0, translate=0, scale=0, hflip=False, vflip=False) is x
    assert random_intensity(x, g, brightness=0, contrast=0) is x
    assert random_noise(x, g, sigma=0) is x
    assert torch.equal(g.get_state(), state)  # nothing drawn
    assert build_augment(AugmentConfig(enabled=True))(x, g) is x


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_sampling_grid_is_exact_at_identity(dims):
    """A vanishing transform through the full grid path reproduces the input (pixel centres map to themselves)."""
    x = _x(dims)
    y = random_affine(x, _g(), translate=1e-9)
    assert torch.allclose(y, x, atol=1e-5)
    y = random_affine(x, _g(), rotate=1e-9, scale=1e-9)
    assert torch.allclose(y, x, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("option", "axis"), [("hflip", -1), ("vflip", -2)])
def test_flips_are_exact(dims, option, axis):
    x = _x(dims)
    x = torch.cat([x, x, x, x])  # enough samples for both outcomes
    y = random_affine(x, _g(3), **{option: True})
    flipped = [torch.allclose(y[i], x[i].flip(axis), atol=1e-5) for i in range(len(x))]
    same = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(len(x))]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert any(flipped) and any(same)


def test_intensity_brightness_and_contrast():
    x = _x(2)
    y = random_intensity(x, _g(), brightness=0.1)
    offset = (y - x).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)  # one offset per sample
    assert offset.abs().max() <= 0.2 + 1e-6
    y = random_intensity(x, _g(), contrast=0.3)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)  # mean kept
    ratio = (y - y.mean(dim=(1, 2, 3), keepdim=True)).std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert torch.all((ratio >= 0.7 - 1e-4) & (ratio <= 1.3 + 1e-4))


def test_noise_scale():
    x = torch.zeros(64, 1, 16, 16)
    y = random_noise(x, _g(), sigma=0.2)
    per_sample = y.flatten(1).std(dim=1)
    assert per_sample.max() < 0.25 and per_sample.min() >= 0
    assert per_sample.std() > 0.01  # sigma drawn per sample
