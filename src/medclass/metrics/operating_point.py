"""Operating points: choosing a decision threshold on a validation split and predicting labels.

Thresholds are always applied as ``score >= threshold`` (scikit-learn's ROC convention). The
thresholds returned here are scores that occur in the data (the lowest score still predicted
positive), so applying them with ``>=`` on the same data reproduces exactly the chosen ROC point.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from medclass.errors import UndefinedMetricWarning
from medclass.metrics.classification import TASKS, roc_curve
from medclass.metrics.positive import binary_score

_NAN = float("nan")


def _full_roc(y_true: ArrayLike, y_score: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """ROC points at every distinct score (without the leading ``inf`` point), or None if undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        warnings.warn(f"{what}: needs both classes among the known labels", UndefinedMetricWarning, stacklevel=3)
        return None
    return fpr[1:], tpr[1:], thresholds[1:]


def youden_threshold(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    The returned value is the score of the ROC point (predict positive when ``score >= t``); among
    points with equal J the highest threshold (the most specific one) is chosen.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).

    Returns:
        The threshold; NaN (with a warning) unless both classes are present.
    """
    roc = _full_roc(y_true, y_score, "youden_threshold")
    if roc is None:
        return _NAN
    fpr, tpr, thresholds = roc
    return float(thresholds[int(np.argmax(tpr - fpr))])


def threshold_for_sensitivity(y_true: ArrayLike, y_score: ArrayLike, target: float) -> float:
    """Highest threshold whose sensitivity (with ``score >= t``) is at least ``target``.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, dropped).
        y_score: Scores of the positive class, shape (N,).
        target: Wanted sensitivity in [0, 1].

    Returns:
        The threshold (a score that occurs in ``y_score``); NaN (with a warning) when there is no
        positive sample.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target sensitivity must be in [0, 1], got {target}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        _, tpr, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    tpr, thresholds = tpr[1:], thresholds[1:]
    if tpr.size == 0 or np.isnan(tpr).any():
        warnings.warn("threshold_for_sensitivity: no positive sample", UndefinedMetricWarning, stacklevel=2)
        return _NAN
    # Sensitivity rises as the threshold falls; allow for rounding in tps / n_pos.
    reached = np.flatnonzero(tpr >= target - 1e-12)
    return float(thresholds[reached[0]])


def predict_labels(
    y_score: ArrayLike,
    task: str,
    threshold: float | ArrayLike = 0.5,
    *,
    inclusive: bool = True,
    positive_index: int = 1,
) -> np.ndarray:
    """Hard predictions from probabilities.

    Args:
        y_score: Probabilities, shape (N, K); binary also accepts P(positive) of shape (N,).
        task: One of ``"binary"``, ``"multiclass"``, ``"ordinal"``, ``"multilabel"``.
        threshold: binary: a float applied to P(positive) (column ``positive_index``); multilabel: a
            float or one per label, shape (L,); ignored for multiclass/ordinal (argmax).
        inclusive: Positive when ``score >= threshold`` (default); False gives ``score > threshold``
            (MedMNIST's rule for its ACC).
        positive_index: Binary: the positive class (see :mod:`medclass.metrics.positive`).

    Returns:
        int64 array: shape (N,) of class indices for binary/multiclass/ordinal, (N, L) of 0/1 for
        multilabel.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    score = np.asarray(y_score, dtype=np.float64)
    compare = np.greater_equal if inclusive else np.greater
    if task == "binary":
        if score.ndim not in (1, 2) or (score.ndim == 2 and score.shape[1] != 2):
            raise ValueError(f"binary y_score must have shape (N, 2) or (N,), got {score.shape}")
        positive = binary_score(score, positive_index)
        return np.where(compare(positive, float(threshold)), positive_index, 1 - positive_index).astype(np.int64)
    if score.ndim != 2:
        raise ValueError(f"y_score must have shape (N, K), got {score.shape}")
    if task == "multilabel":
        limits = np.asarray(threshold, dtype=np.float64)
        if limits.ndim not in (0, 1) or (limits.ndim == 1 and limits.shape[0] != score.shape[1]):
            raise ValueError(f"threshold must be a float or have shape ({score.shape[1]},), got {limits.shape}")
        return compare(score, limits).astype(np.int64)
    return np.argmax(score, axis=1).astype(np.int64)
