"""Truncating final stages: fewer parameters, a head sized to the new last stage, rebuilt from the checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from medclass.errors import ModelError
from medclass.models import create_model
from medclass.models.truncate import truncate_stages
from medclass.predict import Predictor


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "n", "channels"), [("smallcnn", 1, 64), ("resnet18_28", 2, 128), ("resnet50_28", 1, 1024)]
)
def test_medclass_models_lose_their_last_stages(name, n, channels):
    full = create_model(name, in_chans=1, num_classes=3)
    model = truncate_stages(create_model(name, in_chans=1, num_classes=3), n, name=name)
    assert model.num_features == channels and _params(model) < _params(full)
    assert model.get_classifier().in_features == channels and model.get_classifier().out_features == 3
    x = torch.randn(2, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape[1] == channels
    assert model(x).shape == (2, 3) and torch.isfinite(model(x)).all()
    assert dict(model.named_modules())[model.default_cam_layer] is not None


def test_truncating_every_stage_is_refused():
    with pytest.raises(ModelError, match="cannot drop 3 of its 3 stages"):
        truncate_stages(create_model("smallcnn"), 3, name="smallcnn")
    assert truncate_stages(model := create_model("smallcnn"), 0) is model


def test_timm_resnet_truncates_and_a_head_that_cannot_follow_is_refused():
    model = truncate_stages(create_model("timm/resnet18", in_chans=1, num_classes=2), 1, name="timm/resnet18")
    assert model.num_features == 256 and model(torch.randn(2, 1, 64, 64)).shape == (2, 2)
    assert model.default_cam_layer == "layer3"
    with pytest.raises(ModelError, match="cannot be truncated"):
        truncate_stages(create_model("timm/convnext_atto", in_chans=1, num_classes=2), 1, name="timm/convnext_atto")


def test_a_truncated_run_is_rebuilt_for_prediction(tmp_path, make_npz, run_cli, fast_config):
    cfg = tmp_path / "trunc.yaml"
    cfg.write_text(fast_config.read_text() + "model:\n  truncate: 1\n", encoding="utf-8")
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", cfg, "--out", tmp_path / "run", "--quiet")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "run" / "model.json").read_text())["architecture"]["truncate"] == 1
    pred = Predictor.from_checkpoint(tmp_path / "run")
    assert pred.model.num_features == 64
    probs, _ = pred.predict_array(torch.randint(0, 255, (3, 12, 12), dtype=torch.uint8).numpy())
    assert probs.shape == (3, 2)
