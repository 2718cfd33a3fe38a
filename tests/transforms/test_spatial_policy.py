"""Random resized crop, elastic deformation, bias field and the TrivialAugment-style policy."""

from __future__ import annotations

import pytest
import torch

from medclass.config import AugmentConfig
from medclass.errors import ConfigError
from medclass.transforms import build_augment
from medclass.transforms.policy import TRIVIAL_OPS, random_policy
from medclass.transforms.spatial import random_bias_field, random_elastic, random_resized_crop

FUNCS = {
    "crop": (random_resized_crop, {"min_area": 0.5}, {"min_area": 1.0}),
    "elastic": (random_elastic, {"magnitude": 0.05}, {"magnitude": 0.0}),
    "bias": (random_bias_field, {"strength": 0.3}, {"strength": 0.0}),
    "policy": (random_policy, {}, None),
}


def _batch(dims: int, b: int = 6) -> torch.Tensor:
    shape = (b, 1, 16, 16) if dims == 2 else (b, 1, 8, 10, 10)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(FUNCS))
def test_shape_dtype_seed_and_off(name, dims):
    fn, kw, off = FUNCS[name]
    x = _batch(dims)
    a = fn(x, torch.Generator().manual_seed(1), **kw)
    b = fn(x, torch.Generator().manual_seed(1), **kw)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all() and torch.equal(a, b)
    assert not torch.equal(a, fn(x, torch.Generator().manual_seed(2), **kw))
    if off is not None:
        assert fn(x, torch.Generator().manual_seed(1), **off) is x


def test_crop_zooms_in():
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0  # a central square
    y = random_resized_crop(x, torch.Generator().manual_seed(0), min_area=0.25)
    assert (y.mean((1, 2, 3)) >= x.mean((1, 2, 3)) - 1e-6).sum() >= 3  # the square takes a larger share


def test_elastic_keeps_constants_and_is_small():
    const = torch.full((2, 1, 20, 20), 0.4)
    assert torch.allclose(random_elastic(const, torch.Generator().manual_seed(0), magnitude=0.1), const)
    ramp = torch.linspace(-1, 1, 20).view(1, 1, 1, 20).expand(2, 1, 20, 20).contiguous()
    y = random_elastic(ramp, torch.Generator().manual_seed(0), magnitude=0.02)
    assert (y - ramp).abs().max() < 0.1  # at most about 2 % of the side: a shift of the ramp by that much


def test_bias_field_is_smooth_and_multiplicative():
    black = torch.full((2, 1, 12, 12), -1.0)
    assert torch.allclose(random_bias_field(black, torch.Generator().manual_seed(0), strength=0.5), black)
    grey = torch.zeros(2, 1, 12, 12)  # u = 0.5
    y = (random_bias_field(grey, torch.Generator().manual_seed(0), strength=0.5) + 1) / 2
    assert (y > 0.5 * torch.exp(torch.tensor(-2.5)) - 1e-6).all() and (y.diff(dim=-1).abs() < 0.2).all()


def test_policy_applies_one_op_per_sample():
    ops = {"zero": (lambda x, g: x * 0, {}), "one": (lambda x, g: x * 0 + 1, {})}
    x = torch.rand(200, 1, 4, 4)
    y = random_policy(x, torch.Generator().manual_seed(0), ops=ops)
    values = y.flatten(1)[:, 0]
    assert set(values.tolist()) == {0.0, 1.0} and 60 < int(values.sum()) < 140
    assert "identity" in TRIVIAL_OPS and all(k != "hflip" for k in TRIVIAL_OPS)


def test_build_augment_policy_and_errors():
    names = [getattr(t, "fn", None) for t in build_augment(AugmentConfig(enabled=True, policy="trivial")).transforms]
    assert random_policy in names
    with pytest.raises(ConfigError, match="augment.policy"):
        build_augment(AugmentConfig(enabled=True, policy="autoaugment"))
