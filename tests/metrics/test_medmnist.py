"""MedMNIST-comparable AUC and ACC, checked against MedMNIST's evaluator written with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from medclass.metrics import UndefinedMetricWarning, acc, auc


def _reference_auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> float:
    """MedMNIST ``getAUC`` (evaluator.py) restated with scikit-learn."""
    if task == "multilabel":
        return float(np.mean([roc_auc_score(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]))
    if task == "binary":
        return float(roc_auc_score(y_true, y_score[:, -1]))
    return float(np.mean([roc_auc_score(y_true == i, y_score[:, i]) for i in range(y_score.shape[1])]))


def _reference_acc(y_true: np.ndarray, y_score: np.ndarray, task: str, threshold: float = 0.5) -> float:
    """MedMNIST ``getACC`` restated with scikit-learn."""
    if task == "multilabel":
        predicted = y_score > threshold
        return float(np.mean([accuracy_score(y_true[:, i], predicted[:, i]) for i in range(y_true.shape[1])]))
    if task == "binary":
        return float(accuracy_score(y_true, y_score[:, -1] > threshold))
    return float(accuracy_score(y_true, np.argmax(y_score, axis=-1)))


def _data(task: str, seed: int = 0, n: int = 400, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        y = (rng.random((n, k)) < 0.3).astype(np.float64)
        s = np.clip(rng.random((n, k)) * 0.7 + 0.3 * y, 0, 1).round(2)
        return y, s
    classes = 2 if task == "binary" else k
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)).round(1)
    logits[np.arange(n), y] += 1.0
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y.astype(np.float64), s


@pytest.mark.parametrize("task", ["binary", "multiclass", "ordinal", "multilabel"])
def test_auc_and_acc_match_medmnist_evaluator(task: str) -> None:
    y, s = _data(task)
    assert auc(y, s, task) == pytest.approx(_reference_auc(y, s, task), abs=1e-12)
    assert acc(y, s, task) == pytest.approx(_reference_acc(y, s, task), abs=1e-12)
    if task in ("binary", "multilabel"):
        assert acc(y, s, task, threshold=0.3) == pytest.approx(_reference_acc(y, s, task, 0.3), abs=1e-12)


def test_medmnist_label_column_shape_is_accepted() -> None:
    y, s = _data("multiclass")
    assert auc(y[:, None], s, "multiclass") == auc(y, s, "multiclass")


def test_binary_acc_uses_strictly_greater() -> None:
    s = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert acc([0, 0], s, "binary") == 1.0
    assert acc([1, 1], s, "binary") == 0.0


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_nan_labels_are_masked(task: str) -> None:
    y, s = _data(task, seed=1)
    y_missing = y.copy()
    if task == "multilabel":
        y_missing[::5, 1] = np.nan
        y_missing[::3, 2] = np.nan
        for k, value in enumerate(np.array([auc(y_missing[:, [k]], s[:, [k]], "multilabel") for k in range(4)])):
            known = ~np.isnan(y_missing[:, k])
            assert value == pytest.approx(roc_auc_score(y[known, k], s[known, k]))
        return
    y_missing[::6] = np.nan
    known = ~np.isnan(y_missing)
    assert auc(y_missing, s, task) == auc(y[known], s[known], task)
    assert acc(y_missing, s, task) == acc(y[known], s[known], task)


def test_multilabel_all_nan_column_is_skipped() -> None:
    y, s = _data("multilabel", seed=2)
    y[:, 3] = np.nan
    with pytest.warns(UndefinedMetricWarning):
        value = auc(y, s, "multilabel")
    assert value == pytest.approx(_reference_auc(y[:, :3], s[:, :3], "multilabel"))
    with pytest.warns(UndefinedMetricWarning):
        value = acc(y, s, "multilabel")
    assert value == pytest.approx(_reference_acc(y[:, :3], s[:, :3], "multilabel"))


def test_multiclass_absent_class_is_skipped() -> None:
    y, s = _data("multiclass", seed=3)
    y[y == 2] = 0
    with pytest.warns(UndefinedMetricWarning, match="left out"):
        value = auc(y, s, "multiclass")
    expected = np.mean([roc_auc_score(y == k, s[:, k]) for k in (0, 1, 3)])
    assert value == pytest.approx(expected)


def test_all_undefined_is_nan() -> None:
    s = np.array([[0.3, 0.7], [0.6, 0.4]])
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(auc([1, 1], s, "binary"))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(auc([[1, 0], [1, 0]], s, "multilabel"))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(acc([np.nan, np.nan], s, "multiclass"))
