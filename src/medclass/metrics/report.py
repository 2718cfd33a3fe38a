"""The per-split metrics dict written to ``metrics.json``, curve points for plots, threshold choice.

Threshold rules. ``auc``/``acc`` follow MedMNIST exactly, so ``acc`` counts a binary/multilabel
score as positive when it is strictly above ``threshold``; the confusion matrix, ``per_class``,
``balanced_accuracy``, ``cohen_kappa`` and ``threshold_0.5`` use the same rule so that they agree
with ``acc``. The ``operating_point`` uses ``score >= operating_threshold``, the ROC convention of
:mod:`medclass.metrics.operating_point` whose thresholds are scores that occur in the data. The two
rules differ only for scores exactly equal to the threshold.

Binary tasks have a positive class (``positive_index``, see :mod:`medclass.metrics.positive`): the
thresholds apply to its probability, and ``threshold_0.5``, ``operating_point``, the curves and the
chosen threshold are about it. ``auc`` and ``acc`` keep MedMNIST's column-1 definitions (the AUC is
the same either way; ``acc`` differs from the decisions of a positive class 0 only for a score of
exactly 0.5). The confusion matrix and ``per_class`` are in class order whichever class is positive.

Confidence intervals are 95% percentile bootstrap intervals, all computed from the same resamples
(by patient when ``groups`` is given).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medclass.metrics.bootstrap import percentile_interval, resample_weights, weighted_roc_auc
from medclass.metrics.classification import (
    average_precision,
    balanced_accuracy,
    binary_rates,
    check_task_inputs,
    cohen_kappa,
    confusion_matrix,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from medclass.metrics.medmnist import acc, auc, one_vs_rest_targets
from medclass.metrics.operating_point import predict_labels, threshold_for_sensitivity, youden_threshold
from medclass.metrics.positive import binary_score, binary_truth

_NAN = float("nan")
_CI_RATES = ("sensitivity", "specificity", "f1")


def _check_names(label_names: Sequence[str], count: int) -> list[str]:
    names = [str(name) for name in label_names]
    if len(names) != count:
        raise ValueError(f"expected {count} label_names, got {len(names)}")
    return names


def _nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean ignoring NaN, NaN (without a RuntimeWarning) where everything is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _binary_problems(
    labels: np.ndarray, score: np.ndarray, task: str, threshold: float, positive_index: int = 1
) -> tuple[np.ndarray, ...]:
    """One binary problem per class (one-vs-rest) or label.

    Returns:
        ``(targets, scores, predicted)``, each of shape (N, C): 0/1 targets with NaN for unknown
        labels, the score of each class, and the 0/1 prediction at ``threshold`` (strictly above;
        argmax for multiclass/ordinal). Binary tasks give C = 2 (class 0 and class 1), the
        prediction being the positive class when P(positive) is above ``threshold``.
    """
    if task == "binary":
        second = predict_labels(score, "binary", threshold, inclusive=False, positive_index=positive_index)
        targets = np.stack([1.0 - labels, labels], axis=1)
        return targets, score, np.stack([1 - second, second], axis=1)
    if task == "multilabel":
        return labels, score, predict_labels(score, "multilabel", threshold, inclusive=False)
    num_classes = score.shape[1]
    predicted = np.eye(num_classes, dtype=np.int64)[np.argmax(score, axis=1)]
    return one_vs_rest_targets(labels, num_classes), score, predicted


def _cell_indicators(targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indicators of the 2x2 cells, float array of shape (4, N, C) ordered tp, fp, tn, fn."""
    known = ~np.isnan(targets)
    actual = known & (targets == 1)
    negative = known & (targets == 0)
    said = predicted == 1
    return np.stack([actual & said, negative & said, negative & ~said, actual & ~said]).astype(np.float64)


def _rates_from_counts(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised sensitivity, specificity and F1 (NaN on a zero denominator, no warning)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "specificity": np.where(tn + fp > 0, tn / (tn + fp), np.nan),
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
        }


def _bootstrap_table(
    task: str,
    targets: np.ndarray,
    scores: np.ndarray,
    cells: np.ndarray,
    *,
    groups: ArrayLike | None,
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """Bootstrap replicates of every statistic that gets an interval.

    Returns:
        Array of shape (B, 2 + 4 C): columns auc, acc, then per class sensitivity, specificity,
        f1, auc_roc.
    """
    n_rows, n_classes = targets.shape
    chunks = []
    cell_columns = np.concatenate(list(cells), axis=1)  # (N, 4 C): tp, fp, tn, fn blocks
    for counts in resample_weights(n_rows, groups=groups, n_resamples=n_resamples, seed=seed):
        weights = counts.astype(np.float64)
        tp, fp, tn, fn = np.split(weights @ cell_columns, 4, axis=1)  # each (b, C)
        rates = _rates_from_counts(tp, fp, tn, fn)
        aucs = np.stack([weighted_roc_auc(targets[:, k], scores[:, k], weights) for k in range(n_classes)], axis=1)
        known = tp + fp + tn + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            if task == "binary":
                top_auc = aucs[:, 1]
                top_acc = np.where(known[:, 1] > 0, (tp[:, 1] + tn[:, 1]) / known[:, 1], np.nan)
            elif task == "multilabel":
                top_auc = _nanmean(aucs, axis=1)
                top_acc = _nanmean(np.where(known > 0, (tp + tn) / known, np.nan), axis=1)
            else:
                top_auc = _nanmean(aucs, axis=1)
                top_acc = np.where(known[:, 0] > 0, tp.sum(axis=1) / known[:, 0], np.nan)
        per_class = np.stack([rates["sensitivity"], rates["specificity"], rates["f1"], aucs], axis=2)
        chunks.append(np.concatenate([top_auc[:, None], top_acc[:, None], per_class.reshape(len(tp), -1)], axis=1))
    return np.concatenate(chunks, axis=0)


def _pair(low: float, high: float) -> list[float]:
    return [float(low), float(high)]


def _point_rates(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Rates of a 2x2 table plus accuracy and balanced accuracy."""
    rates = binary_rates(tp, fp, tn, fn)
    total = tp + fp + tn + fn
    rates["acc"] = (tp + tn) / total if total else _NAN
    rates["balanced_accuracy"] = (rates["sensitivity"] + rates["specificity"]) / 2.0
    return rates


def _operating_point(
    labels: np.ndarray,
    score: np.ndarray,
    task: str,
    threshold: float | Sequence[float],
    names: list[str],
    positive_index: int = 1,
) -> dict[str, Any]:
    """Rates at an operating threshold (``score >= threshold``), binary (of the positive class) or multilabel."""
    if task == "binary":
        truth = binary_truth(labels, positive_index)
        predicted = (binary_score(score, positive_index) >= float(threshold)).astype(np.int64)
        cells = _cell_indicators(truth[:, None], predicted[:, None]).sum(axis=1)[:, 0]
        return {"threshold": float(threshold), **_point_rates(*(int(c) for c in cells))}
    limits = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (score.shape[1],))
    cells = _cell_indicators(labels, predict_labels(score, "multilabel", limits)).sum(axis=1)  # (4, L)
    per_label = [
        {"name": name, "threshold": float(limits[k]), **_point_rates(*(int(c) for c in cells[:, k]))}
        for k, name in enumerate(names)
    ]
    keys = ("sensitivity", "specificity", "ppv", "npv", "f1", "acc", "balanced_accuracy")
    summary: dict[str, Any] = {"threshold": [float(t) for t in limits]}
    for key in keys:
        summary[key] = float(_nanmean(np.array([row[key] for row in per_label], dtype=np.float64)))
    summary["per_label"] = per_label
    return summary


def evaluate_predictions(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    task: str,
    label_names: Sequence[str],
    threshold: float = 0.5,
    operating_threshold: float | Sequence[float] | None = None,
    groups: ArrayLike | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    positive_index: int = 1,
) -> dict[str, Any]:
    """All metrics of one split, as the JSON-ready dict stored in ``metrics.json``.

    Keys, in order: ``auc``, ``acc`` (MedMNIST definitions), ``n`` (rows with a known label; for
    multilabel, with at least one), ``balanced_accuracy``, ``cohen_kappa`` (multilabel: means over
    labels of the binary values), ``quadratic_kappa`` (ordinal only), ``auc_ci``, ``acc_ci``,
    ``confusion_matrix`` (K x K; binary 2 x 2 at ``threshold``; multilabel a list of per-label
    [[tn, fp], [fn, tp]]), ``per_class`` (one dict per class or label: name, support (positives),
    sensitivity, specificity, ppv, npv, f1, auc_roc, auc_pr and ``*_ci`` for sensitivity,
    specificity, f1, auc_roc), ``threshold_0.5`` (binary: the positive class at 0.5, with acc),
    and ``operating_point`` when ``operating_threshold`` is given (binary: a float on P(positive), the
    rates those of the positive class; multilabel: a float or one per label, then values are means over
    labels and ``per_label`` has the rest).

    Args:
        y_true: Class indices, shape (N,), or multilabel 0/1, shape (N, L); NaN = unknown.
        y_score: Probabilities, shape (N, K).
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        label_names: Name of each class (K names, by class index) or label.
        threshold: Binary/multilabel threshold of ``acc`` and of the threshold-based metrics.
        operating_threshold: Optional threshold chosen on validation data (binary/multilabel).
        groups: Optional patient ID per row, shape (N,); intervals then resample patients.
        n_bootstrap: Number of bootstrap resamples; 0 skips them (intervals are [nan, nan]).
        seed: Seed of the bootstrap.
        positive_index: Binary: the positive class (the finding), 0 or 1.

    Returns:
        Dict of plain Python floats, ints and lists (NaN stays ``float('nan')``).
    """
    labels, score = check_task_inputs(y_true, y_score, task)
    num_classes = score.shape[1]
    names = _check_names(label_names, num_classes)
    if operating_threshold is not None and task not in ("binary", "multilabel"):
        raise ValueError(f"operating_threshold applies to binary and multilabel tasks, not {task!r}")
    targets, scores, predicted = _binary_problems(labels, score, task, threshold, positive_index)
    cells = _cell_indicators(targets, predicted)  # (4, N, C)
    counts = cells.sum(axis=1).astype(np.int64)  # (4, C)

    result: dict[str, Any] = {"auc": auc(labels, score, task), "acc": acc(labels, score, task, threshold)}
    if task == "multilabel":
        known_rows = ~np.isnan(labels)
        result["n"] = int(np.any(known_rows, axis=1).sum())
        columns = range(num_classes)
        balanced = np.array([balanced_accuracy(labels[:, k], predicted[:, k], num_classes=2) for k in columns])
        result["balanced_accuracy"] = float(_nanmean(balanced))
        kappas = np.array([cohen_kappa(labels[:, k], predicted[:, k], num_classes=2) for k in columns])
        result["cohen_kappa"] = float(_nanmean(kappas))
        matrix: list[Any] = [
            confusion_matrix(labels[:, k], predicted[:, k], num_classes=2).tolist() for k in range(num_classes)
        ]
    else:
        result["n"] = int(np.sum(~np.isnan(labels)))
        predicted_class = predicted[:, 1] if task == "binary" else np.argmax(predicted, axis=1)
        result["balanced_accuracy"] = balanced_accuracy(labels, predicted_class, num_classes=num_classes)
        result["cohen_kappa"] = cohen_kappa(labels, predicted_class, num_classes=num_classes)
        if task == "ordinal":
            result["quadratic_kappa"] = cohen_kappa(
                labels, predicted_class, num_classes=num_classes, weights="quadratic"
            )
        matrix = confusion_matrix(labels, predicted_class, num_classes=num_classes).tolist()

    n_stats = 2 + 4 * num_classes
    if n_bootstrap > 0:
        table = _bootstrap_table(task, targets, scores, cells, groups=groups, n_resamples=n_bootstrap, seed=seed)
        lows, highs = percentile_interval(table, 0.95, what="evaluate_predictions")
    else:
        lows, highs = np.full(n_stats, np.nan), np.full(n_stats, np.nan)
    result["auc_ci"] = _pair(lows[0], highs[0])
    result["acc_ci"] = _pair(lows[1], highs[1])
    result["confusion_matrix"] = matrix

    per_class = []
    for k, name in enumerate(names):
        tp, fp, tn, fn = (int(c) for c in counts[:, k])
        row: dict[str, Any] = {"name": name, "support": tp + fn, **binary_rates(tp, fp, tn, fn)}
        row["auc_roc"] = roc_auc(targets[:, k], scores[:, k])
        row["auc_pr"] = average_precision(targets[:, k], scores[:, k])
        for j, key in enumerate((*_CI_RATES, "auc_roc")):
            column = 2 + 4 * k + j
            row[f"{key}_ci"] = _pair(lows[column], highs[column])
        per_class.append(row)
    result["per_class"] = per_class

    if task == "binary":
        at_half = (binary_score(score, positive_index) > 0.5).astype(np.int64)
        truth = binary_truth(labels, positive_index)
        half_cells = _cell_indicators(truth[:, None], at_half[:, None]).sum(axis=1)[:, 0]
        rates = _point_rates(*(int(c) for c in half_cells))
        result["threshold_0.5"] = {key: rates[key] for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "acc")}
    if operating_threshold is not None:
        result["operating_point"] = _operating_point(labels, score, task, operating_threshold, names, positive_index)
    return result


def _downsample(count: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread points, first and last included."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, max_points)).astype(np.int64))


def curves(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    task: str,
    label_names: Sequence[str],
    max_points: int = 200,
    positive_index: int = 1,
) -> dict[str, dict[str, Any]]:
    """ROC and precision-recall curve points per class, for plotting.

    Binary tasks give one entry, the positive class (column ``positive_index``); multiclass/ordinal
    one-vs-rest curves of every class; multilabel one per label.

    Args:
        y_true: Class indices, shape (N,), or multilabel 0/1, shape (N, L); NaN = unknown.
        y_score: Probabilities, shape (N, K).
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        label_names: Name of each class or label, by index.
        max_points: Most points kept per curve (evenly spread along it, ends included).
        positive_index: Binary: the positive class.

    Returns:
        ``{name: {"roc": {"fpr": [...], "tpr": [...]}, "pr": {"recall": [...], "precision": [...]},
        "auc_roc": float, "auc_pr": float}}``; curves of a class without positives (or
        negatives) hold NaN.
    """
    labels, score = check_task_inputs(y_true, y_score, task)
    names = _check_names(label_names, score.shape[1])
    if len(set(names)) != len(names):
        raise ValueError("label_names must be unique")
    if task == "multilabel":
        targets = labels
    elif task == "binary":
        targets = np.stack([1.0 - labels, labels], axis=1)
    else:
        targets = one_vs_rest_targets(labels, score.shape[1])
    columns = [positive_index] if task == "binary" else range(score.shape[1])
    result: dict[str, dict[str, Any]] = {}
    for k in columns:
        fpr, tpr, _ = roc_curve(targets[:, k], score[:, k])
        precision, recall, _ = precision_recall_curve(targets[:, k], score[:, k])
        roc_keep = _downsample(fpr.size, max_points)
        pr_keep = _downsample(recall.size, max_points)
        result[names[k]] = {
            "roc": {"fpr": fpr[roc_keep].tolist(), "tpr": tpr[roc_keep].tolist()},
            "pr": {"recall": recall[pr_keep].tolist(), "precision": precision[pr_keep].tolist()},
            "auc_roc": roc_auc(targets[:, k], score[:, k]),
            "auc_pr": average_precision(targets[:, k], score[:, k]),
        }
    return result


def choose_threshold(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    task: str,
    method: str = "youden",
    target_sensitivity: float | None = None,
    positive_index: int = 1,
) -> float | list[float] | None:
    """Picks an operating threshold (for ``score >= threshold``) on validation predictions.

    A binary threshold applies to P(positive) and a target sensitivity is that of the positive class.

    Args:
        y_true: Class indices, shape (N,), or multilabel 0/1, shape (N, L); NaN = unknown.
        y_score: Probabilities, shape (N, K).
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        method: ``"youden"`` (maximise sensitivity + specificity - 1) or ``"sensitivity"`` (highest
            threshold reaching ``target_sensitivity``).
        target_sensitivity: Wanted sensitivity in [0, 1], for ``method="sensitivity"``.
        positive_index: Binary: the positive class, 0 or 1.

    Returns:
        A float for binary, one float per label for multilabel (NaN, with a warning, where
        undefined), None for multiclass/ordinal (they predict by argmax).
    """
    if method not in ("youden", "sensitivity"):
        raise ValueError(f"method must be 'youden' or 'sensitivity', got {method!r}")
    if method == "sensitivity" and target_sensitivity is None:
        raise ValueError("method='sensitivity' needs target_sensitivity")
    labels, score = check_task_inputs(y_true, y_score, task)
    if task in ("multiclass", "ordinal"):
        return None

    def pick(target: np.ndarray, column: np.ndarray) -> float:
        if method == "youden":
            return youden_threshold(target, column)
        return threshold_for_sensitivity(target, column, float(target_sensitivity))

    if task == "binary":
        return pick(binary_truth(labels, positive_index), binary_score(score, positive_index))
    return [pick(labels[:, k], score[:, k]) for k in range(score.shape[1])]
