"""Threshold selection and label prediction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_curve as sk_roc_curve

from medclass.metrics import UndefinedMetricWarning, predict_labels, threshold_for_sensitivity, youden_threshold


def _sens_spec(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float]:
    predicted = s >= threshold
    return float(np.mean(predicted[y == 1])), float(np.mean(~predicted[y == 0]))


def test_youden_on_perfectly_separable_data() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.6, 0.8, 0.9])
    threshold = youden_threshold(y, s)
    assert threshold == 0.6
    assert _sens_spec(y, s, threshold) == (1.0, 1.0)
    np.testing.assert_array_equal(predict_labels(s, "binary", threshold), y)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=4, max_value=60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 1), min_size=n, max_size=n),
            st.lists(st.integers(0, 9), min_size=n, max_size=n),
        )
    )
)
def test_youden_maximises_j_over_sklearn_roc(sample: tuple[list[int], list[int]]) -> None:
    y, s = np.array(sample[0]), np.array(sample[1]) / 9
    assume(0 < y.sum() < y.size)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    best = np.max(tpr - fpr)
    sensitivity, specificity = _sens_spec(y, s, youden_threshold(y, s))
    assert sensitivity + specificity - 1 == pytest.approx(best)


@pytest.mark.parametrize("target", [0.0, 0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_reaches_target_and_is_highest(target: float) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) * 0.7 + 0.3 * y, 2)
    threshold = threshold_for_sensitivity(y, s, target)
    assert _sens_spec(y, s, threshold)[0] >= target
    higher = np.unique(s[s > threshold])
    if higher.size:  # the next achievable threshold above misses the target
        assert _sens_spec(y, s, higher[0])[0] < target


def test_threshold_for_sensitivity_edge_cases() -> None:
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(threshold_for_sensitivity([0, 0, 0], [0.1, 0.5, 0.7], 0.9))
    with pytest.raises(ValueError, match="target"):
        threshold_for_sensitivity([0, 1], [0.1, 0.9], 1.5)


def test_youden_undefined_with_one_class() -> None:
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(youden_threshold([1, 1, np.nan], [0.2, 0.4, 0.6]))


def test_nan_labels_are_ignored_when_choosing() -> None:
    y = np.array([0, 0, np.nan, 1, 1, np.nan])
    s = np.array([0.1, 0.2, 0.95, 0.6, 0.8, 0.05])
    assert youden_threshold(y, s) == 0.6
    assert threshold_for_sensitivity(y, s, 1.0) == 0.6


def test_predict_labels_shapes_and_rules() -> None:
    binary = np.array([[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_array_equal(predict_labels(binary, "binary", 0.5), [0, 1, 1])
    np.testing.assert_array_equal(predict_labels(binary, "binary", 0.5, inclusive=False), [0, 0, 1])
    np.testing.assert_array_equal(predict_labels(binary[:, 1], "binary", 0.45), [0, 1, 1])
    multi = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    for task in ("multiclass", "ordinal"):
        result = predict_labels(multi, task)
        np.testing.assert_array_equal(result, [1, 0])
        assert result.dtype == np.int64 and result.shape == (2,)
    labels = predict_labels(multi, "multilabel", [0.2, 0.6, 0.05])
    np.testing.assert_array_equal(labels, [[1, 0, 1], [1, 0, 1]])
    assert labels.shape == (2, 3)
    np.testing.assert_array_equal(predict_labels(multi, "multilabel", 0.3), [[0, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError):
        predict_labels(multi, "multilabel", [0.5, 0.5])
    with pytest.raises(ValueError):
        predict_labels(multi, "binary", 0.5)
