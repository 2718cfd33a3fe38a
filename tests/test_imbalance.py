"""Class-imbalance methods against naive references: focal loss, logit adjustment, balanced sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclass.config import RunConfig
from medclass.data.dataset import Split, balanced_order
from medclass.errors import ConfigError
from medclass.tasks import prior_logit_offset, task_loss
from medclass.training.losses import loss_options


def _naive_binary_focal(z, y, gamma, w=None):
    out, n = 0.0, 0
    for zi, yi in zip(z, y, strict=True):
        if np.isnan(yi):
            continue
        p = 1 / (1 + np.exp(-zi))
        term = -(yi * (1 - p) ** gamma * np.log(p) + (1 - yi) * p**gamma * np.log(1 - p))
        out += term * (1.0 if w is None else w[int(yi)])
        n += 1
    return out / n


def _naive_multiclass_focal(z, y, gamma, w):
    num, den = 0.0, 0.0
    for zi, yi in zip(z, y, strict=True):
        p = np.exp(zi - zi.max())
        p /= p.sum()
        num += -w[yi] * (1 - p[yi]) ** gamma * np.log(p[yi])
        den += w[yi]
    return num / den


def test_binary_focal_matches_naive_with_nan_and_weights():
    rng = np.random.default_rng(0)
    z = rng.normal(size=12) * 2
    y = (rng.random(12) < 0.3).astype(np.float64)
    y[[2, 7]] = np.nan
    w = np.array([0.7, 2.0])
    got = task_loss(torch.tensor(z)[:, None], torch.tensor(y), "binary", focal_gamma=2.0, class_weights=torch.tensor(w))
    assert float(got) == pytest.approx(_naive_binary_focal(z, y, 2.0, w), rel=1e-5)


def test_multiclass_focal_matches_naive_and_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(10, 4)) * 2
    y = rng.integers(0, 4, 10)
    w = np.array([1.0, 0.5, 2.0, 1.5])
    args = (torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), "multiclass")
    got = task_loss(*args, focal_gamma=1.5, class_weights=torch.tensor(w, dtype=torch.float32))
    assert float(got) == pytest.approx(_naive_multiclass_focal(z, y, 1.5, w), rel=1e-5)
    plain = task_loss(*args, class_weights=torch.tensor(w, dtype=torch.float32))
    ref = F.cross_entropy(args[0], args[1].long(), weight=torch.tensor(w, dtype=torch.float32))
    assert float(plain) == pytest.approx(float(ref), rel=1e-6)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[4.0, -4.0]])
    hard = torch.tensor([[0.2, -0.2]])
    y = torch.tensor([0.0])
    ratio = lambda z: float(task_loss(z, y, "multiclass", focal_gamma=2.0) / task_loss(z, y, "multiclass"))  # noqa: E731
    assert ratio(easy) < 1e-4 < ratio(hard) < 0.5


def test_prior_offsets_known_values():
    binary = np.array([1, 0, 0, 0, 0, 0, 0, 1], dtype=np.float32)  # 25 % positive
    assert prior_logit_offset(binary, "binary", 2, 1.0).tolist() == pytest.approx([np.log(1 / 3)])
    multi = np.array([0, 0, 1, 2, 2, 2, 2, 2, np.nan], dtype=np.float32)
    assert prior_logit_offset(multi, "multiclass", 3, 0.5).tolist() == pytest.approx(
        (0.5 * np.log([2 / 8, 1 / 8, 5 / 8])).tolist(), rel=1e-6
    )
    ml = np.array([[1, 0], [0, np.nan], [0, 1], [0, 1]], dtype=np.float32)
    assert prior_logit_offset(ml, "multilabel", 2, 1.0).tolist() == pytest.approx(
        [np.log(0.25 / 0.75), np.log((2 / 3) / (1 / 3))], rel=1e-5
    )


def test_logit_adjusted_loss_is_cross_entropy_of_shifted_logits():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 2, 2, 2], dtype=torch.float32)
    off = torch.tensor([-1.0, -2.0, -0.1])
    got = task_loss(z, y, "multiclass", logit_offset=off)
    assert float(got) == pytest.approx(float(F.cross_entropy(z + off, y.long())), rel=1e-6)


def test_balanced_order_equalises_classes_and_is_reproducible():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10, dtype=np.float32)
    draws = np.concatenate([balanced_order(labels, torch.Generator().manual_seed(s)).numpy() for s in range(5)])
    share = np.bincount(labels[draws].astype(int), minlength=3) / len(draws)
    assert np.allclose(share, 1 / 3, atol=0.03)
    a = balanced_order(labels, torch.Generator().manual_seed(7))
    b = balanced_order(labels, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and len(a) == len(labels)


def test_balanced_order_multilabel_uses_the_rarest_positive():
    labels = np.zeros((400, 2), dtype=np.float32)
    labels[:40, 1] = 1  # rare label 1
    labels[:300, 0] = 1  # common label 0 (rows 0-39 carry both: they count as label 1)
    draws = balanced_order(labels, torch.Generator().manual_seed(0)).numpy()
    groups = np.where(draws < 40, 0, np.where(draws < 300, 1, 2))  # rare / common only / none
    assert np.allclose(np.bincount(groups, minlength=3) / len(draws), 1 / 3, atol=0.08)


def test_loss_options_from_config_and_errors():
    split = Split(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.float32))
    cfg = RunConfig()
    cfg.optim.loss, cfg.optim.focal_gamma, cfg.optim.logit_adjust = "focal", 3.0, 1.0
    opts = loss_options(cfg, split, "binary", 2)
    assert opts["focal_gamma"] == 3.0 and opts["logit_offset"].tolist() == pytest.approx([np.log(2 / 6)])
    cfg.optim.loss = "hinge"
    with pytest.raises(ConfigError, match="optim.loss"):
        loss_options(cfg, split, "binary", 2)
    cfg.optim.loss, cfg.train.sampler = "ce", "oversample"
    with pytest.raises(ConfigError, match="train.sampler"):
        loss_options(cfg, split, "binary", 2)


def test_training_with_every_imbalance_option_and_mixing(tmp_path, make_npz, run_cli, fast_config):
    import json

    import yaml

    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=12)
    cfg = yaml.safe_load(fast_config.read_text())
    cfg["optim"] = {"loss": "focal", "focal_gamma": 2.0, "logit_adjust": 1.0}
    cfg["train"]["sampler"] = "balanced"
    cfg["augment"] = {"enabled": True, "mixup": 0.2, "cutmix": 1.0}
    (tmp_path / "imb.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli("train", "--data", data, "--config", tmp_path / "imb.yaml", "--out", tmp_path / "run", "--quiet")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["splits"]["test"]["auc"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["loss"] == "focal" and saved["train"]["sampler"] == "balanced"
    assert saved["augment"]["cutmix"] == 1.0
    cfg["optim"]["loss"] = "hinge"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    bad = run_cli("train", "--data", data, "--config", tmp_path / "bad.yaml", "--out", tmp_path / "r2", "--quiet")
    assert bad.code == 2 and "optim.loss" in bad.err
