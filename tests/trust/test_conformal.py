"""Conformal prediction sets: scores and thresholds by hand, coverage at the stated rate on synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclass.trust.conformal import (
    class_scores,
    conformal_threshold,
    fit_conformal,
    prediction_sets,
    set_metrics,
    threshold_for,
)


def test_scores_by_hand():
    probs = np.array([[0.3, 0.5, 0.2]])
    np.testing.assert_allclose(class_scores(probs, randomized=False), [[0.8, 0.5, 1.0]])
    np.testing.assert_allclose(class_scores(probs, randomized=False, lam=0.1, k_reg=1), [[0.9, 0.5, 1.2]])
    u = np.random.default_rng(5).uniform(size=(1, 1))[0, 0]
    np.testing.assert_allclose(
        class_scores(probs, rng=np.random.default_rng(5)), [[0.5 + u * 0.3, u * 0.5, 0.8 + u * 0.2]]
    )


def test_threshold_is_the_finite_sample_quantile():
    scores = np.arange(1, 11) / 10  # 0.1 ... 1.0
    assert conformal_threshold(scores, 0.2) == pytest.approx(0.9)  # ceil(11 * 0.8) = 9th smallest
    with pytest.warns(UserWarning, match="too few"):
        assert conformal_threshold(scores, 0.05) == np.inf  # ceil(11 * 0.95) = 11 > 10
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(scores, 1.5)


def _synthetic(n: int, k: int, seed: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_p = rng.dirichlet(np.full(k, 0.5), size=n)
    labels = np.array([rng.choice(k, p=p) for p in true_p])
    model_p = true_p**sharpen
    return model_p / model_p.sum(1, keepdims=True), labels


@pytest.mark.parametrize(("k", "sharpen"), [(2, 1.0), (4, 1.0), (4, 2.5)])  # 2.5: an overconfident model
@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_coverage_is_at_the_stated_rate(k, sharpen, alpha):
    cal_p, cal_y = _synthetic(3000, k, seed=1, sharpen=sharpen)
    test_p, test_y = _synthetic(20000, k, seed=2, sharpen=sharpen)
    fitted = fit_conformal(cal_p, cal_y)
    sets = prediction_sets(test_p, threshold_for(fitted, alpha), rng=np.random.default_rng(3))
    coverage = set_metrics(sets, test_y)["coverage"]
    assert abs(coverage - (1 - alpha)) < 0.015


def test_raps_keeps_coverage():
    cal_p, cal_y = _synthetic(3000, 8, seed=1, sharpen=0.5)
    test_p, test_y = _synthetic(20000, 8, seed=2, sharpen=0.5)
    raps = fit_conformal(cal_p, cal_y, lam=0.2, k_reg=1)
    assert raps["method"] == "raps"
    r = set_metrics(prediction_sets(test_p, threshold_for(raps, 0.1), lam=0.2, k_reg=1), test_y)
    assert abs(r["coverage"] - 0.9) < 0.015


def test_stored_levels_and_set_metrics():
    fitted = fit_conformal(*_synthetic(500, 3, seed=0), alphas=(0.05, 0.1))
    assert fitted["method"] == "aps" and fitted["n"] == 500
    assert threshold_for(fitted, 0.07) == fitted["thresholds"][0]  # the stored level at or below 0.07
    with pytest.raises(ValueError, match="below the smallest"):
        threshold_for(fitted, 0.01)
    sets = np.array([[True, False], [True, True], [False, False]])
    m = set_metrics(sets, [0, 1, np.nan])
    assert m == {"coverage": 1.0, "mean_size": 1.5, "singletons": 0.5, "empty": 0.0}


def test_training_stores_thresholds_and_reports_coverage(tmp_path, make_npz, train_cli):
    run = tmp_path / "run"
    train_cli(make_npz(tmp_path / "a.npz", task="multiclass", num_classes=3, sizes=(30, 12, 12), size=12), run)
    meta = json.loads((run / "model.json").read_text())
    assert len(meta["conformal"]["thresholds"]) == 30 and meta["referral"]["alpha"] == 0.1
    test = json.loads((run / "metrics.json").read_text())["splits"]["test"]
    assert set(test["conformal"]) == {"0.1", "0.05"} and 0 <= test["conformal"]["0.1"]["coverage"] <= 1
    assert 0 <= test["aurc"] <= 1
