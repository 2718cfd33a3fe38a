"""Transfer learning: offline pretrained weights, --init-from a run, linear probe, layer-wise learning rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medclass.config import RunConfig
from medclass.data.dataset import Split
from medclass.errors import ConfigError, ModelError
from medclass.models import create_model
from medclass.training.loop import init_weights, train_one_epoch
from medclass.training.optim import build_optimizer, build_scheduler
from medclass.training.transfer import (
    freeze_backbone,
    gradual_unfreeze,
    layer_decay_groups,
    load_matching,
    read_weights,
)
from medclass.transforms import Compose

PREP = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}


def test_offline_timm_weights_load_and_adapt_the_first_conv(tmp_path, monkeypatch):
    donor = create_model("timm/resnet10t", in_chans=3, num_classes=7)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "resnet10t.safetensors"))
    monkeypatch.setenv("MEDCLASS_WEIGHTS_DIR", str(tmp_path))
    cfg = RunConfig()
    cfg.model.name, cfg.model.pretrained = "timm/resnet10t", True
    torch.manual_seed(0)
    model = create_model("timm/resnet10t", in_chans=1, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(model, cfg)
    after, src = model.state_dict(), donor.state_dict()
    first = next(k for k, v in src.items() if v.ndim == 4)
    assert torch.allclose(after[first], src[first].sum(1, keepdim=True))  # grey input: RGB filters summed
    changed = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])]
    assert len(changed) > 10
    for k, v in after.items():
        if k != first and v.shape == src[k].shape and k.startswith("layer"):
            assert torch.equal(v, src[k])
    head = model.get_classifier().weight
    assert head.shape == (2, model.num_features)  # a new head, not the donor's 7 classes


def test_pretrained_without_weights_is_a_clear_error():
    cfg = RunConfig()
    cfg.model.name, cfg.model.pretrained = "smallcnn", True
    with pytest.raises(ConfigError, match="no weights for 'smallcnn'"):
        init_weights(create_model("smallcnn"), cfg)


def test_init_from_run_copies_the_backbone_not_the_head(tmp_path, make_npz, train_cli):
    run = tmp_path / "run"
    train_cli(make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12), run)
    saved = read_weights(run)
    cfg = RunConfig()
    cfg.model.init_from = str(run)
    model = create_model("smallcnn", in_chans=3, num_classes=4)  # other channels, other task
    init_weights(model, cfg)
    state = model.state_dict()
    assert torch.allclose(state["features.stem.0.weight"], saved["features.stem.0.weight"].repeat(1, 3, 1, 1) / 3)
    assert torch.equal(state["features.stage2.0.0.weight"], saved["features.stage2.0.0.weight"])
    assert state["fc.weight"].shape == (4, 128)
    with pytest.raises(ModelError, match="no weights fit"):
        load_matching(create_model("resnet18_28"), saved, where="run")


def test_cli_init_from(tmp_path, make_npz, train_cli, run_cli, fast_config):
    run = tmp_path / "first"
    train_cli(make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12), run)
    data = make_npz(tmp_path / "b.npz", task="multiclass", num_classes=3, sizes=(30, 9, 9), size=12)
    res = run_cli("train", "--data", data, "--config", fast_config, "--out", tmp_path / "second", "--init-from", run)
    assert res.code == 0, res.err
    assert "initialised from" in res.err and "tensors loaded" in res.err
    bad = run_cli("train", "--data", data, "--config", fast_config, "--out", tmp_path / "x", "--init-from", tmp_path)
    assert bad.code == 2 and "model.safetensors: weights file not found" in bad.err


def test_linear_probe_moves_only_the_head():
    torch.manual_seed(0)
    model = create_model("smallcnn", in_chans=1, num_classes=1)  # binary: one logit
    trainable = freeze_backbone(model)
    assert trainable == sum(p.numel() for p in model.get_classifier().parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split = Split(torch.randint(0, 255, (32, 1, 12, 12), dtype=torch.uint8), np.arange(32, dtype=np.float32) % 2)
    opt = build_optimizer(model, RunConfig().optim)
    train_one_epoch(
        model,
        split,
        task="binary",
        prep=PREP,
        optimizer=opt,
        scheduler=build_scheduler(opt, RunConfig().optim, steps_per_epoch=4, epochs=1),
        batch_size=8,
        generator=torch.Generator().manual_seed(0),
        augment=Compose([]),
        loss_kwargs={},
    )
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"fc.weight", "fc.bias"}  # running stats of the frozen backbone stay too


def test_layer_decay_scales_by_depth():
    model = create_model("smallcnn", in_chans=1, num_classes=2)
    groups = layer_decay_groups(model, 0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5**k for k in range(4, -1, -1)]  # stem, stage1-3, head
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    cfg = RunConfig().optim
    cfg.layer_decay, cfg.lr = 0.5, 0.01
    lrs = sorted({g["lr"] for g in build_optimizer(model, cfg).param_groups})
    assert lrs == pytest.approx([0.01 * s for s in scales])


def test_gradual_unfreeze_opens_one_layer_per_step_from_the_top():
    model = create_model("smallcnn", in_chans=1, num_classes=2)  # layers: stem, stage1, stage2, stage3

    def trainable_layers() -> set[str]:
        return {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.requires_grad}

    assert gradual_unfreeze(model, 0, 1) == ["features.stem", "features.stage1", "features.stage2", "features.stage3"]
    assert trainable_layers() == {"fc.weight", "fc.bias"}
    assert gradual_unfreeze(model, 3, 2) == ["features.stem", "features.stage1", "features.stage2"]  # 3 // 2 = 1 open
    assert "features.stage3" in trainable_layers()
    assert gradual_unfreeze(model, 9, 1) == [] and all(p.requires_grad for p in model.parameters())


def test_gradual_unfreezing_in_training_leaves_the_bottom_layers_as_initialised(
    tmp_path, make_npz, run_cli, fast_config
):
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    first = tmp_path / "first"
    assert run_cli("train", "--data", data, "--config", fast_config, "--out", first, "--quiet").code == 0
    cfg = tmp_path / "gradual.yaml"
    cfg.write_text(fast_config.read_text() + "model:\n  freeze: gradual\n  unfreeze_every: 1\n", encoding="utf-8")
    second = tmp_path / "second"
    res = run_cli("train", "--data", data, "--config", cfg, "--out", second, "--quiet", "--init-from", first)
    assert res.code == 0, res.err
    a = read_weights(first)
    last = read_weights(second / "state.safetensors")  # the last epoch's weights (model.json may keep an earlier one)
    b = {k[len("model.") :]: v for k, v in last.items() if k.startswith("model.")}
    # Two epochs: the head, then stage3 too; the stem, stage1 and stage2 (and their BN statistics) never move.
    for name in a:
        if name.startswith(("features.stem", "features.stage1", "features.stage2")):
            assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["features.stage3.0.0.weight"], b["features.stage3.0.0.weight"])
    assert not torch.equal(a["fc.weight"], b["fc.weight"])
