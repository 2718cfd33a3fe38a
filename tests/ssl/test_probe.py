"""The frozen-encoder probes: stage features against a hand-pooled reference, and the choice made on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass.models import create_model
from medclass.ssl.probe import encode, linear_probe

PREP = {"scale": 1 / 255, "mean": [0.5], "std": [0.25]}


def test_stage_features_are_each_stages_spatial_mean_then_the_embedding():
    torch.manual_seed(0)
    model = create_model("smallcnn", in_chans=1, num_classes=0).eval()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    feats = encode(model, images, PREP, batch_size=2)
    assert feats["final"].shape == (5, 128) and feats["stages"].shape == (5, 32 + 64 + 128)
    x = (images.float() / 255.0 - 0.5) / 0.25  # the naive reference: walk the stages by hand
    with torch.no_grad():
        h1 = model.features.stage1(model.features.stem(x))
        h2 = model.features.stage2(h1)
        h3 = model.features.stage3(h2)
    expected = torch.cat([h1.mean((2, 3)), h2.mean((2, 3)), h3.mean((2, 3))], dim=1).numpy()
    np.testing.assert_allclose(feats["stages"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats["final"], h3.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    assert not model.features.stage1._forward_hooks  # the hooks are removed again


def test_a_volume_encoder_pools_its_stages_too():
    model = create_model("smallcnn", in_chans=1, num_classes=0, spatial_dims=3).eval()
    feats = encode(model, torch.randint(0, 256, (2, 1, 16, 16, 16), dtype=torch.uint8), PREP)
    assert feats["stages"].shape == (2, 8 + 16 + 32 + 64) and feats["final"].shape == (2, 64)


@pytest.mark.parametrize("signal", ["final", "stages"])
def test_the_linear_probe_takes_the_features_that_separate_validation(signal):
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        y = rng.integers(0, 2, n)
        informative = y[:, None] + rng.normal(0, 0.7, (n, 3))
        noise = rng.normal(0, 1, (n, 3))
        final = informative if signal == "final" else noise
        stages = np.concatenate([informative if signal == "stages" else rng.normal(0, 1, (n, 3)), final], axis=1)
        return {"final": final, "stages": stages}, y

    train, val, test = split(300), split(200), split(200)
    predict, choice = linear_probe(train, val, "binary")
    assert choice["features"] == signal and choice["c"] in (0.01, 0.1, 1.0, 10.0)
    p = predict(test[0])
    assert p.shape == (200, 2) and np.allclose(p.sum(1), 1)
    assert ((p[:, 1] > 0.5) == test[1]).mean() > 0.8


def test_the_linear_probe_handles_several_classes():
    rng = np.random.default_rng(1)

    def split(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        y = rng.integers(0, 3, n)
        centres = np.eye(3)[y] * 2.0
        final = centres + rng.normal(0, 0.8, (n, 3))
        return {"final": final, "stages": np.concatenate([rng.normal(0, 1, (n, 4)), final], axis=1)}, y

    train, val, test = split(300), split(200), split(200)
    predict, choice = linear_probe(train, val, "multiclass")
    p = predict(test[0])
    assert p.shape == (200, 3) and np.allclose(p.sum(1), 1) and choice["features"] in ("final", "stages")
    assert (p.argmax(1) == test[1]).mean() > 0.7
