"""Binary building blocks and multi-class helpers, checked against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata
from sklearn import metrics as skm

from medclass.metrics import (
    UndefinedMetricWarning,
    accuracy,
    average_precision,
    balanced_accuracy,
    binary_rates,
    check_task_inputs,
    cohen_kappa,
    confusion_matrix,
    per_class_stats,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from medclass.metrics.classification import average_ranks


def _binary_data(seed: int, n: int = 300, levels: int | None = 20) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and scores (N,) correlated with them; ``levels`` rounds scores to create ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    s = rng.random(n) + 0.4 * y
    if levels is not None:
        s = np.round(s * levels) / levels
    return y, s


binary_samples = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(binary_samples)
def test_roc_auc_matches_sklearn_with_ties(sample: tuple[list[int], list[int]]) -> None:
    y, s = np.array(sample[0], dtype=float), np.array(sample[1], dtype=float) / 6
    assume(0 < y.sum() < y.size)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    for drop in (True, False):
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop)
        ref = skm.roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(fpr, ref[0])
        np.testing.assert_allclose(tpr, ref[1])
        np.testing.assert_array_equal(thr, ref[2])
    precision, recall, thresholds = precision_recall_curve(y, s)
    ref = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(precision, ref[0])
    np.testing.assert_allclose(recall, ref[1])
    np.testing.assert_array_equal(thresholds, ref[2])


@pytest.mark.parametrize("levels", [None, 5, 50])
def test_curves_and_aucs_match_sklearn_on_larger_data(levels: int | None) -> None:
    y, s = _binary_data(1, n=1000, levels=levels)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    ref = skm.roc_curve(y, s)
    np.testing.assert_allclose(fpr, ref[0])
    np.testing.assert_allclose(tpr, ref[1])
    np.testing.assert_array_equal(thr, ref[2])
    # The trapezoid area under the ROC curve is the AUC.
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_average_ranks_match_scipy() -> None:
    values = np.round(np.random.default_rng(3).random(200) * 10)
    np.testing.assert_allclose(average_ranks(values), rankdata(values))


def test_roc_auc_tiny_hand_example() -> None:
    # Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.4, 0.1) win, (0.4, 0.4) tie -> 3.5 / 4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]) == pytest.approx(0.875)


def test_nan_labels_are_dropped() -> None:
    y, s = _binary_data(2)
    y_missing = y.copy()
    y_missing[::7] = np.nan
    known = ~np.isnan(y_missing)
    assert roc_auc(y_missing, s) == roc_auc(y[known], s[known])
    assert average_precision(y_missing, s) == average_precision(y[known], s[known])
    for got, expected in zip(roc_curve(y_missing, s), roc_curve(y[known], s[known])):
        np.testing.assert_array_equal(got, expected)
    pred = (s > 0.6).astype(int)
    np.testing.assert_array_equal(
        confusion_matrix(y_missing, pred, num_classes=2), confusion_matrix(y[known], pred[known], num_classes=2)
    )
    assert accuracy(y_missing, pred) == accuracy(y[known], pred[known])
    assert cohen_kappa(y_missing, pred, num_classes=2) == cohen_kappa(y[known], pred[known], num_classes=2)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], [np.nan, 1, 1], [np.nan, np.nan, np.nan]])
def test_single_class_is_undefined(labels: list[float]) -> None:
    scores = [0.2, 0.5, 0.9]
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(roc_auc(labels, scores))
    with pytest.warns(UndefinedMetricWarning):
        curve = roc_curve(labels, scores)
    assert np.isnan(curve[0]).all() or np.isnan(curve[1]).all()
    if np.nansum(labels) == 0:
        with pytest.warns(UndefinedMetricWarning):
            assert np.isnan(average_precision(labels, scores))
        with pytest.warns(UndefinedMetricWarning):
            assert np.isnan(precision_recall_curve(labels, scores)[1][:-1]).all()


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="0, 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="length"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0, 1.5], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="weights"):
        cohen_kappa([0, 1], [0, 1], num_classes=2, weights="cubic")  # type: ignore[arg-type]


def test_binary_rates_from_known_table() -> None:
    # 2x2 table: tp=40, fn=10 (50 diseased), fp=5, tn=45 (50 healthy).
    rates = binary_rates(tp=40, fp=5, tn=45, fn=10)
    assert rates["sensitivity"] == pytest.approx(0.8)
    assert rates["specificity"] == pytest.approx(0.9)
    assert rates["ppv"] == pytest.approx(40 / 45)
    assert rates["npv"] == pytest.approx(45 / 55)
    assert rates["f1"] == pytest.approx(2 * 40 / (2 * 40 + 5 + 10))
    assert list(rates) == ["sensitivity", "specificity", "ppv", "npv", "f1"]


def test_binary_rates_without_positives_are_nan() -> None:
    with pytest.warns(UndefinedMetricWarning, match="sensitivity"):
        rates = binary_rates(tp=0, fp=3, tn=7, fn=0)
    assert np.isnan(rates["sensitivity"])
    assert rates["ppv"] == 0.0
    assert rates["specificity"] == pytest.approx(0.7)
    assert rates["f1"] == 0.0


multiclass_samples = st.integers(min_value=1, max_value=50).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(multiclass_samples)
def test_confusion_kappa_balanced_accuracy_match_sklearn(sample: tuple[list[int], list[int]]) -> None:
    y, p = np.array(sample[0]), np.array(sample[1])
    labels = list(range(4))
    np.testing.assert_array_equal(
        confusion_matrix(y.astype(float), p, num_classes=4), skm.confusion_matrix(y, p, labels=labels)
    )
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for weights in (None, "linear", "quadratic"):
            expected = skm.cohen_kappa_score(y, p, labels=labels, weights=weights)
            got = cohen_kappa(y, p, num_classes=4, weights=weights)
            if np.isnan(expected):
                assert np.isnan(got)
            else:
                assert got == pytest.approx(expected, abs=1e-12)
        assert balanced_accuracy(y, p, num_classes=4) == pytest.approx(skm.balanced_accuracy_score(y, p))
        assert balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))


def test_quadratic_kappa_matches_sklearn_on_ordinal_data() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 500)
    p = np.clip(y + rng.integers(-1, 2, 500), 0, 4)
    expected = skm.cohen_kappa_score(y, p, weights="quadratic")
    assert cohen_kappa(y, p, num_classes=5, weights="quadratic") == pytest.approx(expected)


def test_kappa_undefined_when_chance_agreement_is_perfect() -> None:
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(cohen_kappa([1, 1, 1], [1, 1, 1], num_classes=3))


def test_per_class_stats_one_vs_rest() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    stats = per_class_stats(y, p, num_classes=3)
    recall = skm.recall_score(y, p, average=None)
    precision = skm.precision_score(y, p, average=None)
    f1 = skm.f1_score(y, p, average=None)
    for k, row in enumerate(stats):
        assert row["class"] == k
        assert row["support"] == int(np.sum(y == k))
        assert row["tp"] + row["fp"] + row["tn"] + row["fn"] == 200
        assert row["sensitivity"] == pytest.approx(recall[k])
        assert row["ppv"] == pytest.approx(precision[k])
        assert row["f1"] == pytest.approx(f1[k])
        assert row["specificity"] == pytest.approx(skm.recall_score(y != k, p != k))


def test_check_task_inputs_shapes() -> None:
    y, s = check_task_inputs(np.array([[0], [1]]), [0.2, 0.7], "binary")
    assert y.shape == (2,)
    np.testing.assert_allclose(s, [[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(ValueError, match="task"):
        check_task_inputs([0, 1], [[0.5, 0.5], [0.5, 0.5]], "regression")
    with pytest.raises(ValueError, match="outside"):
        check_task_inputs([0, 3], np.full((2, 3), 1 / 3), "multiclass")
    with pytest.raises(ValueError, match="shape"):
        check_task_inputs(np.zeros((2, 3)), np.zeros((2, 2)), "multilabel")
