"""Histogram equalisation and CLAHE against naive per-pixel references; preprocessing stored in the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medclass.config import AugmentConfig
from medclass.errors import ConfigError
from medclass.predict import Predictor
from medclass.transforms import build_augment
from medclass.transforms.histogram import apply_equalize, clahe, equalize, equalize_options, random_clahe


def _images(shape: tuple[int, ...], seed: int = 0, lo: int = 0, hi: int = 256) -> torch.Tensor:
    return torch.randint(lo, hi, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _naive_equalize(plane: np.ndarray) -> np.ndarray:
    hist = np.bincount(plane.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    first = cdf[hist > 0][0]
    n = plane.size
    if n == first:
        return plane.copy()
    lut = np.array([round(max(c - first, 0) * 255 / (n - first)) for c in cdf])
    return lut[plane].astype(np.uint8)


def _naive_clahe(plane: np.ndarray, clip_limit: float, tiles: int) -> np.ndarray:
    """Per pixel, straight from the definition: region LUTs, then bilinear weights between region centres."""
    h, w = plane.shape
    ty, tx = min(tiles, h), min(tiles, w)
    luts = np.zeros((ty, tx, 256))
    for i in range(ty):
        for j in range(tx):
            rows = [r for r in range(h) if r * ty // h == i]
            cols = [c for c in range(w) if c * tx // w == j]
            region = plane[np.ix_(rows, cols)]
            hist = np.bincount(region.ravel(), minlength=256).astype(float)
            if clip_limit > 0:
                limit = max(clip_limit * region.size / 256, 1)
                excess = np.clip(hist - limit, 0, None).sum()
                hist = np.minimum(hist, limit) + excess / 256
            luts[i, j] = np.cumsum(hist) * 255 / region.size
    out = np.zeros_like(plane)
    for r in range(h):
        fy = (r + 0.5) * ty / h - 0.5
        y0 = min(max(int(np.floor(fy)), 0), ty - 1)
        y1, wy = min(y0 + 1, ty - 1), min(max(fy - y0, 0), 1)
        for c in range(w):
            fx = (c + 0.5) * tx / w - 0.5
            x0 = min(max(int(np.floor(fx)), 0), tx - 1)
            x1, wx = min(x0 + 1, tx - 1), min(max(fx - x0, 0), 1)
            v = plane[r, c]
            top = luts[y0, x0, v] * (1 - wx) + luts[y0, x1, v] * wx
            bottom = luts[y1, x0, v] * (1 - wx) + luts[y1, x1, v] * wx
            out[r, c] = np.clip(np.round(top * (1 - wy) + bottom * wy), 0, 255)
    return out


def test_equalize_matches_the_naive_reference_and_keeps_constant_planes():
    x = _images((3, 2, 9, 11), lo=40, hi=120)
    x[1, 0] = 77  # a constant plane
    out = equalize(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for b in range(3):
        for c in range(2):
            np.testing.assert_array_equal(out[b, c].numpy(), _naive_equalize(x[b, c].numpy()))
    assert torch.equal(out[1, 0], x[1, 0])
    assert out[0, 0].min() == 0 and out[0, 0].max() == 255  # a narrow range is stretched to the full one


@pytest.mark.parametrize(("clip_limit", "tiles", "size"), [(2.0, 4, (16, 12)), (0.0, 3, (10, 13)), (3.0, 8, (5, 9))])
def test_clahe_matches_the_naive_reference(clip_limit, tiles, size):
    x = _images((2, 1, *size), seed=3, lo=30, hi=160)
    out = clahe(x, clip_limit=clip_limit, tiles=tiles)
    for b in range(2):
        ref = _naive_clahe(x[b, 0].numpy(), clip_limit, tiles)
        assert np.abs(out[b, 0].numpy().astype(int) - ref.astype(int)).max() <= 1  # rounding of float sums


def test_clahe_contrast_grows_with_the_clip_limit():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    x = (ramp * 0.2 + 90 + torch.randint(0, 6, (1, 1, 64, 64), generator=g)).to(torch.uint8)  # low contrast
    stds = [clahe(x, clip_limit=c, tiles=2).float().std().item() for c in (1.0, 3.0, 10.0, 0.0)]
    assert x.float().std() < stds[0] < stds[1] < stds[2] < stds[3]  # 0 = no clipping
    assert stds[3] > 3 * x.float().std()
    out = clahe(x, clip_limit=3.0, tiles=2)
    assert (out[..., 1:].int() - out[..., :-1].int()).float().mean() > 0  # the ramp's direction is kept


def test_volumes_are_equalised_slice_by_slice():
    v = _images((2, 1, 3, 12, 12), seed=5)
    out = clahe(v, tiles=3)
    for d in range(3):
        assert torch.equal(out[:, :, d], clahe(v[:, :, d], tiles=3))
    assert torch.equal(equalize(v)[:, :, 1], equalize(v[:, :, 1]))


def test_options_and_bad_method():
    assert equalize_options("none") is None
    assert equalize_options("clahe", clip_limit=3, tiles=4) == {"method": "clahe", "clip_limit": 3.0, "tiles": 4}
    x = _images((1, 1, 8, 8))
    assert apply_equalize(x, None) is x
    assert torch.equal(apply_equalize(x, equalize_options("hist")), equalize(x))
    with pytest.raises(ConfigError, match="data.equalize: unknown method 'gamma'"):
        equalize_options("gamma")


@pytest.mark.parametrize("dims", [2, 3])
def test_random_clahe_is_seeded_and_touches_only_chosen_images(dims):
    shape = (8, 1, 12, 12) if dims == 2 else (8, 1, 4, 8, 8)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    a = random_clahe(x, torch.Generator().manual_seed(1), p=0.5)
    b = random_clahe(x, torch.Generator().manual_seed(1), p=0.5)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    changed = (a != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 8
    kept = ~changed
    assert torch.equal(a[kept], x[kept])
    assert (a[changed].amin() >= x.amin() - 1e-6) and (a[changed].amax() <= x.amax() + 1e-6)  # own range kept
    assert random_clahe(x, torch.Generator(), p=0.0) is x
    assert len(build_augment(AugmentConfig(enabled=True, equalize=0.3))) == 1


def test_training_stores_equalisation_and_prediction_applies_it(tmp_path, make_npz, run_cli, fast_config):
    cfg = tmp_path / "eq.yaml"
    cfg.write_text(fast_config.read_text() + "\ndata:\n  equalize: clahe\n  clahe_tiles: 2\n", encoding="utf-8")
    run = tmp_path / "run"
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", cfg, "--out", run, "--quiet")
    assert res.code == 0, res.err
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocessing"]["equalize"] == {"method": "clahe", "clip_limit": 2.0, "tiles": 2}
    pred = Predictor.from_checkpoint(run)
    images = _images((5, 1, 12, 12), seed=2, lo=60, hi=100)
    with_eq, _ = pred.predict_array(images.numpy())
    pred.prep = {k: v for k, v in pred.prep.items() if k != "equalize"}
    pre_equalised, _ = pred.predict_array(clahe(images, tiles=2).numpy())
    np.testing.assert_allclose(with_eq, pre_equalised, atol=1e-6)
