"""``model.pretrained`` on registered ImageNet models: a local file, else timm's hub; offline, a one-line error.

No network: timm's hub call is replaced by one that fails (offline) or returns a seeded model.
"""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from medclass.config import RunConfig
from medclass.errors import ConfigError
from medclass.models import create_model
from medclass.training.loop import init_weights
from medclass.training.transfer import hub_weights, load_matching

REAL_CREATE = timm.create_model


def _cfg(name: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name, cfg.model.pretrained = name, True
    return cfg


def _offline(*args, **kwargs):
    raise OSError("We couldn't connect to 'https://huggingface.co' to load this file,\ncheck your connection")


def _donor(calls: list):
    def create(arch, pretrained=False, **kwargs):
        calls.append((arch, pretrained, kwargs))
        torch.manual_seed(1)
        return REAL_CREATE(arch, pretrained=False, **kwargs)  # ImageNet-shaped: 3 channels, 1000 classes

    return create


@pytest.mark.parametrize("weights_dir", [True, False])
def test_offline_is_one_line_naming_the_file_to_put_where(tmp_path, monkeypatch, weights_dir):
    if weights_dir:
        monkeypatch.setenv("MEDCLASS_WEIGHTS_DIR", str(tmp_path / "weights"))
    else:
        monkeypatch.delenv("MEDCLASS_WEIGHTS_DIR", raising=False)
    model = create_model("convnext_atto", in_chans=1, num_classes=2)
    monkeypatch.setattr(timm, "create_model", _offline)
    with pytest.raises(ConfigError) as err:
        init_weights(model, _cfg("convnext_atto"))
    message = str(err.value)
    where = str(tmp_path / "weights" / "convnext_atto.safetensors") if weights_dir else "$MEDCLASS_WEIGHTS_DIR/"
    assert "\n" not in message and "model.pretrained" in message and "convnext_atto" in message
    assert where in message and "couldn't connect" in message


def test_hub_weights_are_copied_and_the_first_conv_adapted(monkeypatch):
    monkeypatch.delenv("MEDCLASS_WEIGHTS_DIR", raising=False)
    calls: list = []
    torch.manual_seed(0)
    model = create_model("convnext_atto", in_chans=1, num_classes=2)
    head_before = model.get_classifier().weight.clone()
    monkeypatch.setattr(timm, "create_model", _donor(calls))
    init_weights(model, _cfg("convnext_atto"))
    assert calls == [("convnext_atto", True, {})]  # the registry's timm architecture, ImageNet weights
    donor = _donor([])("convnext_atto").state_dict()
    after = model.state_dict()
    stem = "stem.0.weight"
    assert after[stem].shape[1] == 1 and torch.allclose(after[stem], donor[stem].sum(1, keepdim=True))
    same = [k for k in after if k != stem and after[k].shape == donor[k].shape]
    assert len(same) > 50 and all(torch.equal(after[k], donor[k]) for k in same)
    assert model.get_classifier().weight.shape == (2, model.num_features)  # a new head, not ImageNet's 1000
    assert torch.equal(model.get_classifier().weight, head_before)


@pytest.mark.parametrize("in_chans", [2, 4, 5])
def test_first_conv_adapted_as_timm_does(in_chans):
    rgb = torch.randn(8, 3, 3, 3)
    target = torch.nn.Conv2d(in_chans, 8, 3)
    target.weight.data.zero_()
    load_matching(target, {"weight": rgb, "bias": torch.zeros(8)}, where="test")
    assert torch.allclose(target.weight, timm.models.adapt_input_conv(in_chans, rgb))


def test_a_local_file_comes_before_the_hub(tmp_path, monkeypatch):
    donor = create_model("convnext_atto", in_chans=3, num_classes=7)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "convnext_atto.safetensors"))
    monkeypatch.setenv("MEDCLASS_WEIGHTS_DIR", str(tmp_path))
    model = create_model("convnext_atto", in_chans=3, num_classes=2)
    monkeypatch.setattr(timm, "create_model", _offline)  # never asked
    init_weights(model, _cfg("convnext_atto"))
    key = "stages.1.blocks.0.conv_dw.weight"
    assert torch.equal(model.state_dict()[key], donor.state_dict()[key])


def test_models_without_imagenet_weights_say_so(monkeypatch):
    monkeypatch.setattr(timm, "create_model", _offline)
    for name in ("smallcnn", "classical/hog_svm"):
        with pytest.raises(ConfigError, match=f"no weights for '{name}'.*safetensors"):
            hub_weights(name)
