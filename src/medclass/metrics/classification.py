"""Binary building blocks and multi-class helpers, in plain numpy.

Every function drops rows whose label is unknown (NaN in ``y_true``) before computing anything.
Results match scikit-learn's (``roc_curve``, ``roc_auc_score``, ``average_precision_score``,
``confusion_matrix``, ``balanced_accuracy_score``, ``cohen_kappa_score``) wherever those are
defined; where scikit-learn would raise, return 0 or guess, these return ``nan`` and emit an
:class:`~medclass.metrics.UndefinedMetricWarning`.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from medclass.errors import UndefinedMetricWarning

TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "ordinal")

_NAN = float("nan")


def _warn(message: str) -> None:
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    """Returns ``values`` as a float64 vector; an (N, 1) column is flattened."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {array.shape}")
    return array


def _check_integral(name: str, values: np.ndarray, num_classes: int | None) -> None:
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(f"{name} must hold integer class indices")
    if values.min() < 0 or (num_classes is not None and values.max() >= num_classes):
        raise ValueError(f"{name} holds class indices outside [0, {num_classes})")


def _binary_inputs(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checks binary labels and scores and drops rows with an unknown label.

    Args:
        y_true: Labels, shape (N,), values 0/1 or NaN (unknown).
        y_score: Scores of the positive class, shape (N,), finite.

    Returns:
        ``(positive, score)``: boolean labels and float scores of the known rows, shape (M,).
    """
    y = _as_1d("y_true", y_true)
    s = _as_1d("y_score", y_score)
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score differ in length: {y.shape[0]} != {s.shape[0]}")
    known = ~np.isnan(y)
    y, s = y[known], s[known]
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score must be finite")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("binary y_true must hold 0, 1 or NaN")
    return y == 1, s


def _counts_at_thresholds(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true/false positives when predicting ``score >= t`` for each distinct score ``t``.

    Args:
        positive: Boolean labels, shape (M,).
        score: Scores, shape (M,).

    Returns:
        ``(tps, fps, thresholds)``, each of shape (T,) for the T distinct scores, thresholds
        decreasing.
    """
    order = np.argsort(-score, kind="stable")
    score = score[order]
    last_of_tie = np.flatnonzero(np.diff(score) != 0)
    last_of_tie = np.append(last_of_tie, score.size - 1)
    tps = np.cumsum(positive[order], dtype=np.float64)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, score[last_of_tie]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given the mean of the ranks they span (``scipy.stats.rankdata``).

    Args:
        values: Shape (M,).

    Returns:
        Float ranks, shape (M,).
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.empty(ordered.size, dtype=bool)
    new_group[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], ordered.size)
    mean_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(new_group) - 1]
    return ranks


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic curve, as ``sklearn.metrics.roc_curve``.

    A sample is predicted positive when ``score >= threshold``. The curve starts at (0, 0) with
    threshold ``inf``.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).
        drop_intermediate: Drop points collinear with their neighbours (they do not change the
            curve or its area).

    Returns:
        ``(fpr, tpr, thresholds)``, each of shape (T + 1,), thresholds decreasing. ``fpr`` is NaN
        when there are no negatives and ``tpr`` when there are no positives (with a warning).
    """
    positive, score = _binary_inputs(y_true, y_score)
    if positive.size == 0:
        _warn("roc_curve: no sample with a known label")
        return np.array([_NAN]), np.array([_NAN]), np.array([np.inf])
    tps, fps, thresholds = _counts_at_thresholds(positive, score)
    if drop_intermediate and tps.size > 2:
        corner = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.concatenate(([True], corner, [True]))
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps = np.concatenate(([0.0], tps))
    fps = np.concatenate(([0.0], fps))
    thresholds = np.concatenate(([np.inf], thresholds))
    if fps[-1] == 0:
        _warn("roc_curve: no negative sample, the false positive rate is undefined")
        fpr = np.full(fps.shape, _NAN)
    else:
        fpr = fps / fps[-1]
    if tps[-1] == 0:
        _warn("roc_curve: no positive sample, the true positive rate is undefined")
        tpr = np.full(tps.shape, _NAN)
    else:
        tpr = tps / tps[-1]
    return fpr, tpr, thresholds


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve of a binary problem (``sklearn.metrics.roc_auc_score``).

    Computed with the Mann-Whitney U statistic on average ranks, so tied scores count one half.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).

    Returns:
        The AUC in [0, 1]; NaN (with a warning) unless both classes are present.
    """
    positive, score = _binary_inputs(y_true, y_score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        _warn(f"roc_auc: needs both classes, got {n_pos} positive and {n_neg} negative samples")
        return _NAN
    rank_sum = float(average_ranks(score)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def precision_recall_curve(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall pairs for each distinct score, as ``sklearn.metrics.precision_recall_curve``.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).

    Returns:
        ``(precision, recall, thresholds)``: thresholds increasing, shape (T,); precision and
        recall shape (T + 1,), ending with the point (precision 1, recall 0). Recall is NaN when
        there is no positive sample (with a warning).
    """
    positive, score = _binary_inputs(y_true, y_score)
    if positive.size == 0:
        _warn("precision_recall_curve: no sample with a known label")
        return np.array([1.0]), np.array([_NAN]), np.array([], dtype=np.float64)
    tps, fps, thresholds = _counts_at_thresholds(positive, score)
    precision = tps / (tps + fps)
    if tps[-1] == 0:
        _warn("precision_recall_curve: no positive sample, recall is undefined")
        recall = np.full(tps.shape, _NAN)
    else:
        recall = tps / tps[-1]
    return np.append(precision[::-1], 1.0), np.append(recall[::-1], 0.0), thresholds[::-1]


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the precision-recall curve as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (no interpolation).

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).

    Returns:
        AP in [0, 1]; NaN (with a warning) when there is no positive sample.
    """
    positive, score = _binary_inputs(y_true, y_score)
    if not positive.any():
        _warn("average_precision: no positive sample")
        return _NAN
    tps, fps, _ = _counts_at_thresholds(positive, score)
    precision = tps / (tps + fps)
    recall_gain = np.diff(tps, prepend=0.0) / tps[-1]
    return float(np.sum(recall_gain * precision))


def _class_inputs(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Drops unknown labels and checks class indices; returns int64 vectors of shape (M,)."""
    y = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.shape[0]} != {p.shape[0]}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    _check_integral("y_true", y, num_classes)
    _check_integral("y_pred", p, num_classes)
    return y.astype(np.int64), p.astype(np.int64)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int) -> np.ndarray:
    """Confusion matrix, rows the true class and columns the predicted class.

    Args:
        y_true: True class indices, shape (N,), NaN = unknown (dropped).
        y_pred: Predicted class indices, shape (N,).
        num_classes: Number of classes K.

    Returns:
        Counts, int64 array of shape (K, K).
    """
    y, p = _class_inputs(y_true, y_pred, num_classes)
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else _NAN


def binary_rates(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """Rates of a 2x2 table.

    Args:
        tp: True positives.
        fp: False positives.
        tn: True negatives.
        fn: False negatives.

    Returns:
        ``{"sensitivity", "specificity", "ppv", "npv", "f1"}`` as floats; a rate whose
        denominator is zero is NaN (with one warning naming them).
    """
    rates = {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    undefined = [name for name, value in rates.items() if np.isnan(value)]
    if undefined:
        _warn(f"binary_rates: {', '.join(undefined)} undefined (zero denominator)")
    return rates


def per_class_stats(y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int) -> list[dict[str, float | int]]:
    """One-vs-rest counts and rates of every class.

    Args:
        y_true: True class indices, shape (N,), NaN = unknown (dropped).
        y_pred: Predicted class indices, shape (N,).
        num_classes: Number of classes K.

    Returns:
        K dicts ``{"class", "support", "tp", "fp", "tn", "fn", "sensitivity", "specificity",
        "ppv", "npv", "f1"}``; support is the number of samples of the class.
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    total = int(matrix.sum())
    stats: list[dict[str, float | int]] = []
    for k in range(num_classes):
        tp = int(matrix[k, k])
        fn = int(matrix[k].sum()) - tp
        fp = int(matrix[:, k].sum()) - tp
        tn = total - tp - fn - fp
        row: dict[str, float | int] = {"class": k, "support": tp + fn, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        row.update(binary_rates(tp, fp, tn, fn))
        stats.append(row)
    return stats


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of correct predictions.

    Args:
        y_true: True class indices, shape (N,), NaN = unknown (dropped).
        y_pred: Predicted class indices, shape (N,).

    Returns:
        Accuracy; NaN (with a warning) when no label is known.
    """
    y, p = _class_inputs(y_true, y_pred, None)
    if y.size == 0:
        _warn("accuracy: no sample with a known label")
        return _NAN
    return float(np.mean(y == p))


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true`` (``sklearn.metrics.balanced_accuracy_score``).

    Args:
        y_true: True class indices, shape (N,), NaN = unknown (dropped).
        y_pred: Predicted class indices, shape (N,).
        num_classes: Number of classes K; inferred from the data when None.

    Returns:
        Balanced accuracy; NaN (with a warning) when no label is known.
    """
    y, p = _class_inputs(y_true, y_pred, num_classes)
    if y.size == 0:
        _warn("balanced_accuracy: no sample with a known label")
        return _NAN
    k = num_classes if num_classes is not None else int(max(y.max(), p.max())) + 1
    matrix = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def cohen_kappa(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    num_classes: int,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float:
    """Cohen's kappa, optionally weighted by class distance (``sklearn.metrics.cohen_kappa_score``).

    Class distances are those of the indices ``0..K-1`` (scikit-learn gives the same value when
    called with ``labels=range(K)``).

    Args:
        y_true: True class indices, shape (N,), NaN = unknown (dropped).
        y_pred: Predicted class indices, shape (N,).
        num_classes: Number of classes K.
        weights: None (unweighted), ``"linear"`` (|i - j|) or ``"quadratic"`` ((i - j)^2).

    Returns:
        Kappa in [-1, 1]; NaN (with a warning) when no label is known or chance agreement is
        perfect (e.g. both raters always give the same class).
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes=num_classes).astype(np.float64)
    total = matrix.sum()
    if total == 0:
        _warn("cohen_kappa: no sample with a known label")
        return _NAN
    index = np.arange(num_classes)
    distance = np.abs(index[:, None] - index[None, :]).astype(np.float64)
    if weights is None:
        weight = (distance > 0).astype(np.float64)
    elif weights == "linear":
        weight = distance
    elif weights == "quadratic":
        weight = distance**2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / total
    disagreement_expected = float(np.sum(weight * expected))
    if disagreement_expected == 0:
        _warn("cohen_kappa: undefined when chance agreement is perfect")
        return _NAN
    return 1.0 - float(np.sum(weight * matrix)) / disagreement_expected


def check_task_inputs(y_true: ArrayLike, y_score: ArrayLike, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validates labels and scores of a task and returns them as float64 arrays.

    Args:
        y_true: binary/multiclass/ordinal: class indices, shape (N,) (an (N, 1) column is
            accepted); multilabel: 0/1 of shape (N, L). NaN = unknown.
        y_score: Probabilities, shape (N, K). Binary also accepts P(positive) of shape (N,).
        task: One of :data:`TASKS`.

    Returns:
        ``(y_true, y_score)``: y_true shape (N,) or (N, L); y_score shape (N, K), K = 2 for binary.

    Raises:
        ValueError: On an unknown task, mismatched shapes, out-of-range labels or non-finite scores.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    score = np.asarray(y_score, dtype=np.float64)
    if task == "binary" and score.ndim == 1:
        score = np.stack([1.0 - score, score], axis=1)
    if score.ndim != 2:
        raise ValueError(f"y_score must have shape (N, K), got {score.shape}")
    if not np.all(np.isfinite(score)):
        raise ValueError("y_score must be finite")
    n, k = score.shape
    if task == "multilabel":
        labels = np.asarray(y_true, dtype=np.float64)
        if labels.ndim == 1 and k == 1:
            labels = labels[:, None]
        if labels.shape != score.shape:
            raise ValueError(f"multilabel y_true must have the shape of y_score {score.shape}, got {labels.shape}")
        known = labels[~np.isnan(labels)]
        if np.any((known != 0) & (known != 1)):
            raise ValueError("multilabel y_true must hold 0, 1 or NaN")
        return labels, score
    if task == "binary" and k != 2:
        raise ValueError(f"binary y_score must have 2 columns, got {k}")
    if k < 2:
        raise ValueError(f"{task} y_score must have at least 2 columns, got {k}")
    labels = _as_1d("y_true", y_true)
    if labels.shape[0] != n:
        raise ValueError(f"y_true and y_score differ in length: {labels.shape[0]} != {n}")
    _check_integral("y_true", labels[~np.isnan(labels)], k)
    return labels, score
