"""Class weights and the prior correction that undoes them at decision time (:mod:`medclass.training.losses`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medclass.config import config_from_dict
from medclass.data.sources import load_npz
from medclass.training.losses import class_weights_for, correct_prior, prior_correction


def _cfg(**optim):
    return config_from_dict({"optim": optim})


def test_offset_is_minus_log_weight_and_only_for_weighted_multiclass(tmp_path, make_npz):
    ds = load_npz(make_npz(tmp_path / "m.npz", task="multiclass", num_classes=3, sizes=(30, 6, 6)))
    train = ds.splits["train"]
    w = class_weights_for(train, "multiclass", 3, "balanced")
    off = prior_correction(_cfg(class_weight="balanced", prior_correction=True), train, "multiclass", 3)
    assert torch.allclose(off, -torch.log(w))
    counts = np.bincount(train.labels.astype(int), minlength=3)
    # up to a constant, the offset is the log training prior
    assert np.allclose(off.numpy() - off.numpy().mean(), np.log(counts) - np.log(counts).mean(), atol=1e-5)
    assert prior_correction(_cfg(class_weight=None, prior_correction=True), train, "multiclass", 3) is None
    assert prior_correction(_cfg(class_weight="balanced"), train, "multiclass", 3) is None
    assert prior_correction(_cfg(class_weight="balanced", prior_correction=True), train, "binary", 2) is None


def test_correct_prior_folds_the_offset_into_the_output_bias_once(tmp_path, make_npz):
    ds = load_npz(make_npz(tmp_path / "m.npz", task="multiclass", num_classes=3, sizes=(30, 6, 6)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 1, 6, 6)
    before = model(x).detach()
    cfg = _cfg(class_weight="balanced", prior_correction=True)
    meta = correct_prior(model, {"task": "multiclass"}, cfg, ds)
    off = prior_correction(cfg, ds.splits["train"], "multiclass", 3)
    assert torch.allclose(model(x).detach(), before + off, atol=1e-5)
    assert np.allclose(meta["logit_offset"], off.numpy(), atol=1e-5)
    correct_prior(model, meta, cfg, ds)  # already applied: unchanged
    assert torch.allclose(model(x).detach(), before + off, atol=1e-5)
    untouched = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    ref = untouched(x).detach()
    assert "logit_offset" not in correct_prior(untouched, {"task": "multiclass"}, _cfg(class_weight="balanced"), ds)
    assert torch.equal(untouched(x).detach(), ref)


def test_class_weight_multiclass_false_keeps_weights_to_threshold_tasks(tmp_path, make_npz):
    from medclass.training.losses import class_weight_mode, loss_options

    cfg = _cfg(class_weight="balanced", class_weight_multiclass=False)
    assert class_weight_mode(cfg, "binary") == "balanced" and class_weight_mode(cfg, "multilabel") == "balanced"
    assert class_weight_mode(cfg, "multiclass") is None and class_weight_mode(cfg, "ordinal") is None
    assert class_weight_mode(_cfg(class_weight="balanced"), "multiclass") == "balanced"
    ds = load_npz(make_npz(tmp_path / "m.npz", task="multiclass", num_classes=3, sizes=(30, 6, 6)))
    assert loss_options(cfg, ds.splits["train"], "multiclass", 3)["class_weights"] is None
    pc = _cfg(class_weight="balanced", class_weight_multiclass=False, prior_correction=True)
    assert prior_correction(pc, ds.splits["train"], "multiclass", 3) is None  # nothing to undo
