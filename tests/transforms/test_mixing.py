"""Mixup and cutmix: shapes, soft labels that sum to 1, reproducibility, and pixel shares that match the targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medclass.tasks import task_loss
from medclass.transforms.mixing import Mixer, cutmix, mixup, soft_targets


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_soft_targets_per_task():
    y = torch.tensor([0.0, 2.0, float("nan")])
    t = soft_targets(y, "multiclass", 3)
    assert t.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    b = soft_targets(torch.tensor([1.0, float("nan")]), "binary", 2)
    assert b[0] == 1 and math.isnan(b[1])


@pytest.mark.parametrize("spatial", [(8, 8), (4, 6, 6)])
def test_mixup_blends_images_and_targets_with_one_ratio(spatial):
    b = 6
    # image k is constant k; one-hot targets of class k % 3
    x = torch.arange(b, dtype=torch.float32).view(b, 1, *([1] * len(spatial))).expand(b, 1, *spatial).clone()
    t = soft_targets(torch.arange(b, dtype=torch.float32) % 3, "multiclass", 3)
    mx, mt = mixup(x, t, _gen(1), alpha=0.4)
    assert mx.shape == x.shape and mx.dtype == torch.float32 and mt.shape == (b, 3)
    assert torch.allclose(mt.sum(1), torch.ones(b))
    # recover lam and the partner of sample 0 from the images and check the targets agree
    mx2, mt2 = mixup(x, t, _gen(1), alpha=0.4)
    assert torch.equal(mx, mx2) and torch.equal(mt, mt2)  # reproducible from the seed
    g = _gen(1)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    lam = float(np.random.default_rng(seed).beta(0.4, 0.4))
    perm = torch.randperm(b, generator=g)
    assert torch.allclose(mx[:, 0].flatten(1)[:, 0], lam * torch.arange(b) + (1 - lam) * perm.float())
    assert torch.allclose(mt, lam * t + (1 - lam) * t[perm])


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_cutmix_target_ratio_equals_pixel_share(spatial):
    b = 5
    x = torch.zeros(b, 1, *spatial)
    x[1::2] = 1.0  # odd samples all ones, even samples all zeros
    t = soft_targets(torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]), "multiclass", 2)
    for seed in range(5):
        mx, mt = cutmix(x, t, _gen(seed), alpha=1.0)
        assert mx.shape == x.shape and torch.allclose(mt.sum(1), torch.ones(b))
        share_of_ones = mx.flatten(1).mean(1)
        assert torch.allclose(share_of_ones, mt[:, 1], atol=1e-6)  # class 1 images are the ones


def test_mixer_binary_keeps_unknown_labels_masked_and_loss_is_finite():
    x = torch.randn(8, 1, 6, 6)
    y = torch.tensor([0, 1, 1, 0, float("nan"), 1, 0, 1])
    mixer = Mixer("binary", 2, mixup_alpha=0.2, cutmix_alpha=1.0)
    mx, mt = mixer(x, y, _gen(3))
    assert mt.shape == (8,) and torch.isnan(mt).sum() >= 1  # the unknown one and its partner's row
    assert ((mt[~torch.isnan(mt)] >= 0) & (mt[~torch.isnan(mt)] <= 1)).all()
    loss = task_loss(torch.randn(8, 1), mt, "binary")
    assert torch.isfinite(loss)
    assert not Mixer("binary", 2)


def test_soft_multiclass_loss_with_class_weights_matches_hard_labels_when_unmixed():
    z = torch.randn(6, 3, generator=_gen(0))
    y = torch.tensor([0.0, 1.0, 2.0, 2.0, 0.0, 1.0])
    w = torch.tensor([0.5, 1.0, 2.0])
    hard = task_loss(z, y, "multiclass", class_weights=w)
    soft = task_loss(z, soft_targets(y, "multiclass", 3), "multiclass", class_weights=w)
    assert float(soft) == pytest.approx(float(hard), rel=1e-6)
