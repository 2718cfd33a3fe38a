"""Selective prediction: refer the least certain cases to a radiologist, and measure what that buys.

Certainty of a decision:

* binary: the distance of the case's logit from the operating threshold's logit,
  ``|logit(p) - logit(t)|`` with ``p = P(positive)`` (0 on the decision boundary), so it follows the
  threshold the model actually uses rather than 0.5;
* multi-class and ordinal: the top-class probability.

:func:`risk_coverage_curve` gives the error rate among the accepted cases as the share accepted
grows (with its area, AURC, lower is better). :func:`referral_cut` picks, on validation, the
smallest certainty to accept so that sensitivity on the accepted cases stays at or above a target
(binary) and as few cases as possible are referred.

Binary functions take ``positive_index``, the positive class (see :mod:`medclass.metrics.positive`;
1 by default): thresholds are on its probability and sensitivity is its recall.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike

from medclass.metrics.positive import binary_decision, binary_score

_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def certainty(probs: ArrayLike, task: str, threshold: float | None = None, *, positive_index: int = 1) -> np.ndarray:
    """``(N,)`` certainty of each decision (higher = surer); see the module docstring."""
    p = np.asarray(probs, dtype=np.float64)
    if task == "binary":
        pos = binary_score(p, positive_index)
        t = 0.5 if threshold is None else float(threshold)
        return np.abs(_logit(pos) - _logit(np.array(t)))
    if task in ("multiclass", "ordinal"):
        return p.max(1)
    raise ValueError(f"selective prediction supports binary, multiclass and ordinal tasks, not {task}")


def decisions(probs: ArrayLike, task: str, threshold: float | None = None, *, positive_index: int = 1) -> np.ndarray:
    """``(N,)`` predicted class: the positive class when ``P(positive) >= threshold`` (binary), else the argmax."""
    p = np.asarray(probs, dtype=np.float64)
    if task == "binary":
        return binary_decision(p, threshold, positive_index)
    return p.argmax(1)


def risk_coverage_curve(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    task: str = "binary",
    threshold: float | None = None,
    positive_index: int = 1,
) -> dict[str, object]:
    """Error rate among the accepted cases when the ``k`` surest are accepted, for every ``k``.

    Returns:
        ``{"coverage": (n,), "risk": (n,), "aurc": float}`` over labelled cases; ``aurc`` is the
        mean risk over all coverages (``nan`` with a warning when nothing is labelled).
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    known = ~np.isnan(y)
    p = np.asarray(probs, dtype=np.float64)[known]
    y = y[known].astype(int)
    if len(y) == 0:
        warnings.warn("risk_coverage_curve: no labelled samples; returning nan", RuntimeWarning, stacklevel=2)
        return {"coverage": np.zeros(0), "risk": np.zeros(0), "aurc": math.nan}
    order = np.argsort(-certainty(p, task, threshold, positive_index=positive_index), kind="stable")
    wrong = (decisions(p, task, threshold, positive_index=positive_index) != y)[order]
    k = np.arange(1, len(y) + 1)
    risk = np.cumsum(wrong) / k
    return {"coverage": k / len(y), "risk": risk, "aurc": float(risk.mean())}


def referral_cut(
    y_true: ArrayLike, probs: ArrayLike, *, threshold: float, target_sensitivity: float, positive_index: int = 1
) -> dict[str, float]:
    """The smallest certainty to accept (binary) that keeps sensitivity on accepted cases at or above the target.

    Args:
        y_true: ``(N,)`` 0/1 labels (NaN = unknown, left out).
        probs: ``(N, 2)`` calibrated probabilities, or ``(N,)`` ``P(positive)``.
        threshold: The operating threshold on ``P(positive)``.
        target_sensitivity: Required sensitivity among the accepted cases of the positive class.
        positive_index: The positive class, 0 or 1.

    Returns:
        ``{"cut", "coverage", "sensitivity", "specificity"}`` on these cases; ``cut`` is ``inf`` (refer
        everything) with a warning when no cut reaches the target.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    known = ~np.isnan(y)
    p = np.asarray(probs, dtype=np.float64)[known]
    y = y[known].astype(int)
    cert = certainty(p, "binary", threshold, positive_index=positive_index)
    pred = decisions(p, "binary", threshold, positive_index=positive_index)
    negative = 1 - positive_index
    for cut in np.concatenate([[0.0], np.unique(cert)]):  # ascending: the first that works refers least
        acc = cert >= cut
        pos = acc & (y == positive_index)
        if not pos.any():
            continue
        sens = float((pred[pos] == positive_index).mean())
        if sens >= target_sensitivity:
            neg = acc & (y == negative)
            spec = float((pred[neg] == negative).mean()) if neg.any() else math.nan
            return {"cut": float(cut), "coverage": float(acc.mean()), "sensitivity": sens, "specificity": spec}
    warnings.warn(f"referral_cut: no cut reaches sensitivity {target_sensitivity}; refer every case", stacklevel=2)
    return {"cut": math.inf, "coverage": 0.0, "sensitivity": math.nan, "specificity": math.nan}


def referral_summary(
    y_true: ArrayLike, probs: ArrayLike, cut: float, *, threshold: float, positive_index: int = 1
) -> dict[str, float]:
    """Coverage, sensitivity and specificity (of the positive class) on the cases a stored ``cut`` accepts (binary)."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    known = ~np.isnan(y)
    p = np.asarray(probs, dtype=np.float64)[known]
    y = y[known].astype(int)
    acc = certainty(p, "binary", threshold, positive_index=positive_index) >= cut
    pred = decisions(p, "binary", threshold, positive_index=positive_index)
    negative = 1 - positive_index
    pos, neg = acc & (y == positive_index), acc & (y == negative)
    return {
        "coverage": float(acc.mean()) if len(y) else math.nan,
        "sensitivity": float((pred[pos] == positive_index).mean()) if pos.any() else math.nan,
        "specificity": float((pred[neg] == negative).mean()) if neg.any() else math.nan,
    }
