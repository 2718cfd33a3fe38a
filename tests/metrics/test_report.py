"""evaluate_predictions, curves and choose_threshold."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from medclass.metrics import (
    UndefinedMetricWarning,
    acc,
    auc,
    bootstrap_ci,
    choose_threshold,
    curves,
    evaluate_predictions,
    youden_threshold,
)

PER_CLASS_KEYS = [
    "name",
    "support",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "auc_roc",
    "auc_pr",
    "sensitivity_ci",
    "specificity_ci",
    "f1_ci",
    "auc_roc_ci",
]
RATE_KEYS = ["sensitivity", "specificity", "ppv", "npv", "f1"]


def _data(task: str, seed: int = 0, n: int = 300, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        y = (rng.random((n, k)) < 0.3).astype(np.float64)
        return y, np.clip(rng.random((n, k)) * 0.7 + 0.3 * y, 0, 1).round(2)
    classes = 2 if task == "binary" else k
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)).round(1)
    logits[np.arange(n), y] += 1.0
    return y.astype(np.float64), np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _assert_plain_json(value: Any) -> None:
    """Only Python dicts, lists, str, int and float (no numpy scalars) anywhere."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert type(value) in (str, int, float), f"{value!r} is {type(value)}"


def _evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return evaluate_predictions(*args, **kwargs)


def test_binary_report_matches_sklearn() -> None:
    y, s = _data("binary")
    y[::10] = np.nan
    known = ~np.isnan(y)
    report = _evaluate(y, s, task="binary", label_names=["normal", "pneumonia"], n_bootstrap=200)
    json.dumps(report, allow_nan=True)
    _assert_plain_json(report)
    assert list(report) == [
        "auc",
        "acc",
        "n",
        "balanced_accuracy",
        "cohen_kappa",
        "auc_ci",
        "acc_ci",
        "confusion_matrix",
        "per_class",
        "threshold_0.5",
    ]
    yk, sk = y[known], s[known]
    predicted = (sk[:, 1] > 0.5).astype(int)
    assert report["n"] == int(known.sum())
    assert report["auc"] == pytest.approx(skm.roc_auc_score(yk, sk[:, 1]))
    assert report["acc"] == pytest.approx(skm.accuracy_score(yk, predicted))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yk, predicted))
    assert report["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(yk, predicted))
    assert report["confusion_matrix"] == skm.confusion_matrix(yk, predicted).tolist()
    assert [row["name"] for row in report["per_class"]] == ["normal", "pneumonia"]
    negative, positive = report["per_class"]
    assert list(positive) == PER_CLASS_KEYS
    assert positive["support"] == int(yk.sum()) and negative["support"] == int((1 - yk).sum())
    assert positive["sensitivity"] == pytest.approx(skm.recall_score(yk, predicted))
    assert positive["ppv"] == pytest.approx(skm.precision_score(yk, predicted))
    assert positive["f1"] == pytest.approx(skm.f1_score(yk, predicted))
    assert negative["sensitivity"] == positive["specificity"]
    assert positive["auc_roc"] == pytest.approx(report["auc"])
    assert positive["auc_pr"] == pytest.approx(skm.average_precision_score(yk, sk[:, 1]))
    assert negative["auc_pr"] == pytest.approx(skm.average_precision_score(1 - yk, sk[:, 0]))
    assert report["threshold_0.5"] == {**{key: positive[key] for key in RATE_KEYS}, "acc": report["acc"]}
    for key in ("auc_ci", "acc_ci"):
        low, high = report[key]
        assert low <= report[key[:-3]] <= high


@pytest.mark.parametrize("task", ["binary", "multiclass", "ordinal", "multilabel"])
def test_intervals_equal_generic_bootstrap(task: str) -> None:
    y, s = _data(task, seed=1, n=150)
    groups = np.arange(150) // 3
    names = ["a", "b"] if task == "binary" else ["a", "b", "c", "d"]
    report = _evaluate(y, s, task=task, label_names=names, n_bootstrap=150, seed=7, groups=groups)
    options = {"groups": groups, "n_resamples": 150, "seed": 7}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected_auc = bootstrap_ci(lambda a, b: auc(a, b, task), y, s, **options)
        expected_acc = bootstrap_ci(lambda a, b: acc(a, b, task), y, s, **options)
    np.testing.assert_allclose(report["auc_ci"], expected_auc, atol=1e-12)
    np.testing.assert_allclose(report["acc_ci"], expected_acc, atol=1e-12)

    # Per-class sensitivity of the last class, recomputed row by row.
    k = len(names) - 1

    def sensitivity(a: np.ndarray, b: np.ndarray) -> float:
        if task == "multilabel":
            truth, said = a[:, k] == 1, b[:, k] > 0.5
        elif task == "binary":
            truth, said = a == 1, b[:, 1] > 0.5
        else:
            truth, said = a == k, np.argmax(b, axis=1) == k
        return float(np.mean(said[truth])) if truth.any() else float("nan")

    expected = bootstrap_ci(sensitivity, y, s, **options)
    np.testing.assert_allclose(report["per_class"][k]["sensitivity_ci"], expected, atol=1e-12)


@pytest.mark.parametrize("task", ["multiclass", "ordinal"])
def test_multiclass_report(task: str) -> None:
    y, s = _data(task, seed=2)
    names = ["c0", "c1", "c2", "c3"]
    report = _evaluate(y, s, task=task, label_names=names, n_bootstrap=100)
    json.dumps(report, allow_nan=True)
    _assert_plain_json(report)
    assert list(report)[:2] == ["auc", "acc"]
    assert ("quadratic_kappa" in report) == (task == "ordinal")
    assert "threshold_0.5" not in report and "operating_point" not in report
    predicted = np.argmax(s, axis=1)
    assert report["auc"] == pytest.approx(skm.roc_auc_score(y, s, multi_class="ovr", average="macro"))
    assert report["confusion_matrix"] == skm.confusion_matrix(y, predicted).tolist()
    assert report["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, predicted))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    if task == "ordinal":
        expected = skm.cohen_kappa_score(y, predicted, weights="quadratic")
        assert report["quadratic_kappa"] == pytest.approx(expected)
    recall = skm.recall_score(y, predicted, average=None)
    for k, row in enumerate(report["per_class"]):
        assert row["name"] == names[k]
        assert row["sensitivity"] == pytest.approx(recall[k])
        assert row["auc_roc"] == pytest.approx(skm.roc_auc_score(y == k, s[:, k]))
    with pytest.raises(ValueError, match="operating_threshold"):
        evaluate_predictions(y, s, task=task, label_names=names, operating_threshold=0.5, n_bootstrap=0)


def test_multilabel_report_with_missing_labels() -> None:
    y, s = _data("multilabel", seed=3)
    y[:, 2] = np.nan  # label never annotated in this split
    y[::4, 0] = np.nan
    names = ["effusion", "mass", "nodule", "edema"]
    with pytest.warns(UndefinedMetricWarning):
        report = evaluate_predictions(
            y, s, task="multilabel", label_names=names, operating_threshold=[0.4, 0.5, 0.5, 0.6], n_bootstrap=100
        )
    json.dumps(report, allow_nan=True)
    _assert_plain_json(report)
    assert report["n"] == 300
    expected_auc = np.mean([skm.roc_auc_score(y[~np.isnan(y[:, k]), k], s[~np.isnan(y[:, k]), k]) for k in (0, 1, 3)])
    assert report["auc"] == pytest.approx(expected_auc)
    assert len(report["confusion_matrix"]) == 4
    assert report["confusion_matrix"][2] == [[0, 0], [0, 0]]
    known = ~np.isnan(y[:, 0])
    assert report["confusion_matrix"][0] == skm.confusion_matrix(y[known, 0], s[known, 0] > 0.5).tolist()
    nodule = report["per_class"][2]
    assert nodule["support"] == 0 and np.isnan(nodule["auc_roc"]) and np.isnan(nodule["auc_roc_ci"][0])
    assert report["per_class"][0]["support"] == int(np.nansum(y[:, 0]))
    point = report["operating_point"]
    assert point["threshold"] == [0.4, 0.5, 0.5, 0.6]
    first = point["per_label"][0]
    predicted = s[known, 0] >= 0.4
    assert first["sensitivity"] == pytest.approx(skm.recall_score(y[known, 0], predicted))
    assert first["acc"] == pytest.approx(skm.accuracy_score(y[known, 0], predicted))
    assert point["sensitivity"] == pytest.approx(np.nanmean([row["sensitivity"] for row in point["per_label"]]))


def test_binary_operating_point() -> None:
    y, s = _data("binary", seed=4)
    threshold = youden_threshold(y, s[:, 1])
    report = _evaluate(y, s, task="binary", label_names=["-", "+"], operating_threshold=threshold, n_bootstrap=0)
    point = report["operating_point"]
    assert list(point) == ["threshold", *RATE_KEYS, "acc", "balanced_accuracy"]
    predicted = (s[:, 1] >= threshold).astype(int)
    assert point["threshold"] == threshold
    assert point["sensitivity"] == pytest.approx(skm.recall_score(y, predicted))
    assert point["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - predicted))
    assert point["acc"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert point["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert all(np.isnan(report["auc_ci"]))


def test_single_class_split_gives_nan_not_errors() -> None:
    s = np.array([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    with pytest.warns(UndefinedMetricWarning):
        report = evaluate_predictions([1, 1, 1], s, task="binary", label_names=["a", "b"], n_bootstrap=50)
    assert np.isnan(report["auc"]) and np.isnan(report["auc_ci"][0])
    assert report["acc"] == pytest.approx(2 / 3)
    text = json.dumps(report, allow_nan=True)
    assert text.startswith('{"auc": NaN, "acc": ')


def test_label_names_are_checked() -> None:
    y, s = _data("binary")
    with pytest.raises(ValueError, match="label_names"):
        evaluate_predictions(y, s, task="binary", label_names=["only one"], n_bootstrap=0)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_curves(task: str) -> None:
    y, s = _data(task, seed=5, n=2000)
    s = s + np.random.default_rng(0).random(s.shape) * 1e-6  # distinct scores: long curves
    names = ["n", "p"] if task == "binary" else ["a", "b", "c", "d"]
    result = curves(y, s, task=task, label_names=names)
    json.dumps(result, allow_nan=True)
    _assert_plain_json(result)
    assert list(result) == (["p"] if task == "binary" else names)
    for name, entry in result.items():
        roc, pr = entry["roc"], entry["pr"]
        assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 200
        assert 2 <= len(pr["recall"]) == len(pr["precision"]) <= 200
        assert roc["fpr"][0] == 0.0 and roc["tpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
        assert pr["recall"][0] == 1.0 and pr["recall"][-1] == 0.0
        assert np.all(np.diff(roc["fpr"]) >= 0)
        k = names.index(name)
        target = y[:, k] if task == "multilabel" else (y == k)
        assert entry["auc_roc"] == pytest.approx(skm.roc_auc_score(target, s[:, k]))
        assert entry["auc_pr"] == pytest.approx(skm.average_precision_score(target, s[:, k]))


def test_choose_threshold() -> None:
    y, s = _data("binary", seed=6)
    assert choose_threshold(y, s, task="binary") == youden_threshold(y, s[:, 1])
    chosen = choose_threshold(y, s, task="binary", method="sensitivity", target_sensitivity=0.9)
    assert isinstance(chosen, float)
    assert np.mean(s[y == 1, 1] >= chosen) >= 0.9
    ym, sm = _data("multilabel", seed=6)
    per_label = choose_threshold(ym, sm, task="multilabel")
    assert isinstance(per_label, list) and len(per_label) == 4
    assert per_label[1] == youden_threshold(ym[:, 1], sm[:, 1])
    yc, sc = _data("multiclass", seed=6)
    assert choose_threshold(yc, sc, task="multiclass") is None
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_threshold(y, s, task="binary", method="sensitivity")
    with pytest.raises(ValueError, match="method"):
        choose_threshold(y, s, task="binary", method="f1")
