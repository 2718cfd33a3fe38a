"""Temperature and vector scaling recover known distortions; the fitted calibration travels with the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medclass.errors import ConfigError
from medclass.inference import predict_logits
from medclass.predict import Predictor
from medclass.trust.scaling import (
    CHI2_1DF_95,
    apply_calibration,
    fit_calibration,
    fit_temperature,
    fit_vector_scaling,
    temperature_evidence,
)


def _binary(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(float)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_is_recovered_for_binary_logits(true_t):
    z, y = _binary()
    t = fit_temperature((z * true_t)[:, None], y, "binary")  # the model's logits are t times too sharp
    assert t == pytest.approx(true_t, rel=0.06)


def test_temperature_is_recovered_for_multiclass_and_multilabel():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (20000, 4))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p], dtype=float)
    assert fit_temperature(z * 3.0, y, "multiclass") == pytest.approx(3.0, rel=0.06)
    zl, yl = _binary(seed=2)
    labels = np.stack([yl, np.where(np.arange(yl.size) % 3 == 0, np.nan, yl)], 1)  # NaN = unknown, left out
    assert fit_temperature(np.stack([zl, zl], 1) * 2.0, labels, "multilabel") == pytest.approx(2.0, rel=0.06)


def test_vector_scaling_recovers_per_class_scales_and_beats_a_single_temperature():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (20000, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p], dtype=float)
    distorted = z * np.array([2.0, 0.5, 1.0]) + np.array([1.0, 0.0, -1.0])
    w, b = fit_vector_scaling(distorted, y)
    np.testing.assert_allclose(w, [0.5, 2.0, 1.0], rtol=0.1)
    fixed = torch.tensor(distorted) * torch.tensor(w) + torch.tensor(b)
    nll_vec = torch.nn.functional.cross_entropy(fixed, torch.tensor(y).long())
    t = fit_temperature(distorted, y, "multiclass")
    nll_t = torch.nn.functional.cross_entropy(torch.tensor(distorted) / t, torch.tensor(y).long())
    assert nll_vec < nll_t


def test_apply_and_methods():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2]])
    scaled = apply_calibration(logits, {"method": "temperature", "temperature": 2.0})
    assert torch.allclose(scaled, logits / 2) and torch.equal(scaled.argmax(1), logits.argmax(1))
    assert apply_calibration(logits, None) is logits
    assert fit_calibration(logits.numpy(), [0, 1], "multiclass", "none") is None
    with pytest.raises(ConfigError, match="vector scaling is for multi-class"):
        fit_calibration(logits[:, :1].numpy(), [0, 1], "binary", "vector")
    with pytest.raises(ConfigError, match="unknown method 'platt'"):
        fit_calibration(logits.numpy(), [0, 1], "multiclass", "platt")


def test_training_fits_stores_and_applies_the_temperature(tmp_path, make_npz, train_cli):
    run = tmp_path / "run"
    train_cli(make_npz(tmp_path / "a.npz", task="multiclass", num_classes=3, sizes=(30, 12, 12), size=12), run)
    meta = json.loads((run / "model.json").read_text())
    cal = meta["calibration"]
    assert cal["method"] == "temperature" and cal["temperature"] == (
        cal["fitted"] if cal["evidence"] > CHI2_1DF_95 else 1.0
    )
    test = json.loads((run / "metrics.json").read_text())["splits"]["test"]["calibration"]
    assert test["temperature"] == cal["temperature"] and test["fitted_temperature"] == cal["fitted"]
    assert {"ece", "ece_adaptive", "brier"} <= set(test) and test["uncalibrated"]["ece"] >= 0
    pred = Predictor.from_checkpoint(run)
    images = torch.randint(0, 255, (4, 1, 12, 12), dtype=torch.uint8)
    probs, _ = pred.predict_array(images.numpy())
    logits = predict_logits(pred.model, images, pred.prep)
    np.testing.assert_allclose(probs, torch.softmax(logits / cal["temperature"], 1).numpy(), atol=1e-5)
    assert "Reliability" in (run / "report.html").read_text()
    meta["calibration"]["temperature"] = 2.5  # whatever the checkpoint stores is what predict applies
    (run / "model.json").write_text(json.dumps(meta))
    probs, _ = Predictor.from_checkpoint(run).predict_array(images.numpy())
    np.testing.assert_allclose(probs, torch.softmax(logits / 2.5, 1).numpy(), atol=1e-5)


def test_a_separable_small_validation_set_keeps_a_finite_temperature():
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])[:, None]
    y = np.array([0, 0, 0, 1, 1, 1.0])  # plain NLL keeps falling as T -> 0
    t = fit_temperature(z, y, "binary")
    assert 0.2 < t < 1.0


def test_temperature_evidence_matches_a_naive_likelihood_ratio():
    z, y = _binary(n=200, seed=4)
    t = 1.7

    def loglik(scale: float) -> float:
        p = 1 / (1 + np.exp(-z / scale))
        return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))

    expected = 2 * (loglik(t) - loglik(1.0))
    assert temperature_evidence(z[:, None], y, "binary", t) == pytest.approx(expected, rel=1e-9)


def test_a_temperature_without_evidence_is_not_applied():
    z, y = _binary(n=60, seed=5)  # calibrated logits, a small validation split: the fitted T is noise
    cal = fit_calibration(z[:, None], y, "binary")
    assert cal["fitted"] != 1.0 and cal["evidence"] < CHI2_1DF_95 and cal["temperature"] == 1.0
    z, y = _binary(n=2000, seed=6)  # logits 2.5 times too sharp on a larger split: clear evidence
    cal = fit_calibration(z[:, None] * 2.5, y, "binary")
    assert cal["evidence"] > CHI2_1DF_95 and cal["temperature"] == cal["fitted"] == pytest.approx(2.5, rel=0.1)
