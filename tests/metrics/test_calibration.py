"""ECE (equal-width and adaptive), Brier score and reliability curves against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from medclass.metrics.calibration import brier_score, expected_calibration_error, reliability_curve


def test_binary_ece_by_hand():
    probs = np.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    # Bin (0.8, 0.9]: confidence 0.9, frequency 0.75 (4 items); bin (0.1, 0.2]: 0.2 vs 0 (2 items).
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx((4 * 0.15 + 2 * 0.2) / 6)
    curve = reliability_curve(labels, np.stack([1 - probs, probs], 1), n_bins=10)
    np.testing.assert_allclose(curve["confidence"], [0.2, 0.9])
    np.testing.assert_allclose(curve["frequency"], [0.0, 0.75])
    np.testing.assert_array_equal(curve["count"], [2, 4])


def test_multiclass_ece_uses_the_top_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1])  # first right with confidence 0.7, second wrong with 0.6
    assert expected_calibration_error(labels, probs, task="multiclass", n_bins=10) == pytest.approx((0.3 + 0.6) / 2)


def test_multilabel_pools_known_labels():
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    labels = np.array([[1, np.nan], [1, 0]])
    # Known items: 0.9 -> 1, 0.9 -> 1, 0.1 -> 0: gaps 0.1, 0.1, 0.1.
    assert expected_calibration_error(labels, probs, task="multilabel", n_bins=10) == pytest.approx(0.1)


def test_calibrated_data_has_small_ece_and_overconfident_data_large():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    for strategy in ("uniform", "quantile"):
        assert expected_calibration_error(y, p, strategy=strategy) < 0.015
    logit = np.log(p / (1 - p))
    sharp = 1 / (1 + np.exp(-3 * logit))
    assert expected_calibration_error(y, sharp) > 0.1
    assert expected_calibration_error(y, sharp, strategy="quantile") > 0.1


def test_adaptive_bins_hold_equal_counts():
    p = np.linspace(0.01, 0.99, 100)
    y = np.zeros(100)
    curve = reliability_curve(y, p, n_bins=4, strategy="quantile")
    np.testing.assert_array_equal(curve["count"], [25, 25, 25, 25])


def test_brier_by_hand():
    assert brier_score([1, 0], [0.8, 0.3]) == pytest.approx((0.04 + 0.09) / 2)
    assert brier_score([0], [[0.7, 0.2, 0.1]], task="multiclass") == pytest.approx(0.09 + 0.04 + 0.01)
    assert brier_score([[1, np.nan]], [[0.6, 0.5]], task="multilabel") == pytest.approx(0.16)


def test_no_labels_gives_nan_and_a_warning():
    with pytest.warns(RuntimeWarning, match="no labelled samples"):
        assert np.isnan(expected_calibration_error([np.nan, np.nan], [0.2, 0.4]))
    with pytest.warns(RuntimeWarning, match="no labelled samples"):
        assert np.isnan(brier_score([np.nan], [0.2]))
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve([1], [0.5], strategy="kmeans")


def test_debiased_l2_error_by_hand():
    from medclass.metrics.calibration import debiased_l2_calibration_error

    probs = np.array([0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    # Two equal-count bins: (0.2 vs 0.25) and (0.9 vs 0.75), each 4 items; variance terms f(1-f)/3.
    low = (0.25 - 0.2) ** 2 - 0.25 * 0.75 / 3
    high = (0.75 - 0.9) ** 2 - 0.75 * 0.25 / 3
    expected = np.sqrt(max(0.0, (low + high) / 2))
    assert debiased_l2_calibration_error(labels, probs, n_bins=2) == pytest.approx(expected)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # frequencies 0 and 1: no variance, all bias
    assert debiased_l2_calibration_error(labels, probs, n_bins=2) == pytest.approx(np.sqrt((0.04 + 0.01) / 2))


def test_debiased_l2_error_is_near_zero_when_calibrated_and_recovers_a_known_error():
    """Perfect calibration at n = 156 (BreastMNIST's test size): the plain ECE stays well above 0, the
    debiased estimate is 0 at least half the time; a constant miscalibration of 0.1 is recovered at large n."""
    from medclass.metrics.calibration import debiased_l2_calibration_error

    rng = np.random.default_rng(0)
    plain, debiased = [], []
    for _ in range(200):
        p = rng.uniform(0.05, 0.95, 156)
        y = (rng.uniform(size=156) < p).astype(float)
        plain.append(expected_calibration_error(y, p))
        debiased.append(debiased_l2_calibration_error(y, p))
    assert np.mean(plain) > 0.08 and np.median(debiased) < 0.01 and np.mean(debiased) < np.mean(plain) / 2
    p = rng.uniform(0.2, 0.7, 200_000)
    y = (rng.uniform(size=p.size) < p + 0.1).astype(float)
    assert debiased_l2_calibration_error(y, p) == pytest.approx(0.1, abs=0.005)
