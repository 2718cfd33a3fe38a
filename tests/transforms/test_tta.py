"""Test-time augmentation: the views, and their averaged probabilities in evaluate and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from medclass.inference import predict_logits, predict_probs
from medclass.models import create_model
from medclass.transforms.tta import tta_views


def test_views_are_exact():
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    views = tta_views(x, ["hflip", "vflip", "shift"])
    assert len(views) == 7 and views[0] is x
    assert torch.equal(views[1], x.flip(-1)) and torch.equal(views[2], x.flip(-2))
    right = views[3]  # content moves one pixel towards higher indices, first column repeated
    assert torch.equal(right[..., 1:], x[..., :-1]) and torch.equal(right[..., 0], x[..., 0])
    left = views[4]
    assert torch.equal(left[..., :-1], x[..., 1:]) and torch.equal(left[..., -1], x[..., -1])
    down = views[5]
    assert torch.equal(down[..., 1:, :], x[..., :-1, :])
    vol = torch.rand(1, 1, 3, 4, 5)
    assert all(v.shape == vol.shape for v in tta_views(vol, ["shift", "hflip"]))
    with pytest.raises(ValueError, match="rot90"):
        tta_views(x, ["rot90"])


def test_predictions_average_the_views_logits():
    torch.manual_seed(0)
    model = create_model("smallcnn", in_chans=1, num_classes=3).eval()
    images = torch.randint(0, 255, (5, 1, 12, 12), dtype=torch.uint8)
    prep = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}
    plain = predict_logits(model, images, prep)
    flipped = predict_logits(model, images.flip(-1), prep)
    both = predict_logits(model, images, {**prep, "tta": ["hflip"]})
    assert torch.allclose(both, (plain + flipped) / 2, atol=1e-6)
    probs = predict_probs(model, images, "multiclass", {**prep, "tta": ["hflip"]})
    assert np.allclose(probs, torch.softmax(both, 1).numpy(), atol=1e-6)
    assert np.allclose(probs.sum(1), 1, atol=1e-6)


def test_tta_is_stored_and_used_by_predict(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(24, 8, 8), size=12)
    cfg = yaml.safe_load(fast_config.read_text())
    cfg["eval"]["tta"] = ["hflip", "shift"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("train", "--data", data, "--config", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet")
    assert res.code == 0, res.err
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["preprocessing"]["tta"] == ["hflip", "shift"]
    cfg["eval"]["tta"] = ["rot90"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    bad = run_cli("train", "--data", data, "--config", tmp_path / "bad.yaml", "--out", tmp_path / "r2", "--quiet")
    assert bad.code == 2 and "eval.tta" in bad.err
