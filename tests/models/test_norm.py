"""BatchNorm swapped for GroupNorm: affine parameters kept, groups dividing the channels, built from a checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from medclass.models import build_model, create_model
from medclass.models.norm import batchnorm_to_groupnorm


def test_swap_keeps_affine_parameters_and_picks_dividing_groups() -> None:
    model = nn.Sequential(nn.Conv2d(1, 12, 3), nn.BatchNorm2d(12), nn.ReLU(inplace=True))
    with torch.no_grad():
        model[1].weight.uniform_()
        model[1].bias.uniform_()
    weight, bias = model[1].weight.clone(), model[1].bias.clone()
    swapped = batchnorm_to_groupnorm(model, groups=8)
    gn = swapped[1]
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 6  # largest divisor of 12 that is at most 8
    torch.testing.assert_close(gn.weight, weight)
    torch.testing.assert_close(gn.bias, bias)
    assert swapped[2].inplace is False
    x = torch.randn(3, 1, 8, 8)
    naive = nn.functional.group_norm(swapped[0](x), 6, weight, bias, gn.eps).relu()
    torch.testing.assert_close(swapped(x), naive)  # one row's output does not depend on the others
    torch.testing.assert_close(swapped(x[:1]), naive[:1])


def test_checkpoint_architecture_with_group_norm_builds_and_loads_its_weights() -> None:
    arch = {"name": "smallcnn_tiny", "in_chans": 1, "num_outputs": 2, "norm": "group"}
    model = build_model(arch)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 0
    again = build_model(arch)
    again.load_state_dict(model.state_dict())  # the same keys: a saved DP model loads
    plain = create_model("smallcnn_tiny", in_chans=1, num_classes=2)
    assert any(k.endswith("running_mean") for k in plain.state_dict())
    assert not any(k.endswith("running_mean") for k in model.state_dict())


def test_a_run_trained_with_group_norm_keeps_it_in_its_checkpoint(tmp_path, make_npz, run_cli, fast_config) -> None:
    from medclass.predict import Predictor

    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli(
        "train", "--data", data, "--config", fast_config, "--out", tmp_path / "r", "--set", "model.norm=group"
    )
    assert res.code == 0, res.err
    model = Predictor.from_checkpoint(tmp_path / "r").model
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    bad = run_cli(
        "train", "--data", data, "--config", fast_config, "--out", tmp_path / "x", "--set", "model.norm=layer"
    )
    assert bad.code == 2 and "model.norm" in bad.err and "group" in bad.err
