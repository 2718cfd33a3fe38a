"""Run artefacts: model weights + metadata, resumable training state, optimiser round trip."""

from __future__ import annotations

import json

import pytest
import torch

from medclass import checkpoint
from medclass.checkpoint import (
    flatten_optimizer,
    load_model,
    load_state,
    read_model_meta,
    restore_optimizer,
    save_model,
    save_state,
)
from medclass.errors import ModelError
from medclass.models import create_model

ARCH = {"name": "smallcnn", "spatial_dims": 2, "in_chans": 1, "num_outputs": 3, "kwargs": {}}
META = {
    "architecture": ARCH,
    "task": "multiclass",
    "label_names": ["a", "b", "c"],
    "preprocessing": {"input_shape": [1, 12, 12], "channels": 1, "scale": 1 / 255, "mean": [0.5], "std": [0.5]},
    "threshold": None,
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("smallcnn", in_chans=1, num_classes=3, spatial_dims=2)


def test_save_and_load_model(tmp_path):
    model = _model()
    save_model(tmp_path, model, META)
    loaded, meta = load_model(tmp_path)
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["label_names"] == ["a", "b", "c"]
    assert not loaded.training
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="checkpoint folder not found"):
        load_model(tmp_path / "none")
    with pytest.raises(ModelError, match=r"model\.json missing"):
        read_model_meta(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read model metadata"):
        read_model_meta(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"architecture": ARCH}))
    with pytest.raises(ModelError, match="lacks 'task'"):
        read_model_meta(tmp_path)
    save_model(tmp_path, _model(), META)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        load_model(tmp_path)
    save_model(tmp_path, create_model("smallcnn", num_classes=5), META)  # weights of another head
    with pytest.raises(ModelError, match="weights do not fit 'smallcnn'"):
        load_model(tmp_path)


def test_optimizer_roundtrip_through_state(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 1, 12, 12)).sum().backward()
    opt.step()
    tensors, groups = flatten_optimizer(opt)
    assert load_state(tmp_path) is None
    save_state(tmp_path, tensors, {"epoch": 1, "param_groups": groups, "best": float("-inf")})
    loaded, meta = load_state(tmp_path)
    assert meta["epoch"] == 1 and meta["best"] == float("-inf")
    opt2 = torch.optim.AdamW(_model().parameters(), lr=0.5)
    restore_optimizer(opt2, loaded, meta["param_groups"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 0.01
    for idx, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][idx][k]))


def test_state_tensors_and_metadata_stay_paired(tmp_path, monkeypatch):
    """A run killed between writing state.safetensors and state.json must not pair new tensors with old metadata."""
    save_state(tmp_path, {"w": torch.zeros(3)}, {"epoch": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies before state.json is replaced

    monkeypatch.setattr(checkpoint, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, {"w": torch.ones(3)}, {"epoch": 2})
    tensors, meta = load_state(tmp_path)
    assert meta["epoch"] == int(tensors["w"][0].item()) + 1
