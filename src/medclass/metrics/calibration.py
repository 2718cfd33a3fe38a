"""Calibration metrics: expected calibration error (equal-width and adaptive bins), Brier score, reliability curve.

What is calibrated depends on the task, as in most of the literature:

* binary: the probability of the positive class against the 0/1 label;
* multi-class and ordinal: the top-label confidence (largest probability) against whether the
  predicted class is right;
* multi-label: every known (label, image) probability against its 0/1 value, pooled.

Each function returns ``nan`` with a warning when nothing is left to score. Plotting lives in
:mod:`medclass.report`.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from medclass.metrics.classification import check_task_inputs

STRATEGIES = ("uniform", "quantile")


def _confidence_and_outcome(y_true: ArrayLike, y_prob: ArrayLike, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Per scored item: the predicted probability and the 0/1 outcome it should match."""
    labels, probs = check_task_inputs(y_true, y_prob, task)
    if task == "binary":
        p = probs[:, 1] if probs.ndim == 2 else probs
        known = ~np.isnan(labels)
        return p[known].astype(float), labels[known].astype(float)
    if task == "multilabel":
        known = ~np.isnan(labels)
        return probs[known].astype(float), labels[known].astype(float)
    known = ~np.isnan(labels)
    probs, labels = probs[known], labels[known].astype(int)
    return probs.max(1).astype(float), (probs.argmax(1) == labels).astype(float)


def _bin_edges(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return edges
    raise ValueError(f"strategy must be one of {STRATEGIES}, got '{strategy}'")


def reliability_curve(
    y_true: ArrayLike, y_prob: ArrayLike, *, task: str = "binary", n_bins: int = 15, strategy: str = "uniform"
) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, observed frequency and count (the reliability diagram's data).

    Args:
        y_true: Labels as for the task (``(N,)`` or ``(N, L)``, NaN = unknown).
        y_prob: ``(N, K)`` probabilities (binary: ``(N, 2)`` or ``(N,)`` positive-class probabilities).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        n_bins: Number of bins.
        strategy: ``uniform`` (equal-width bins on [0, 1]) or ``quantile`` (equal-count bins: the
            adaptive ECE's binning).

    Returns:
        ``{"confidence", "frequency", "count", "edges"}``; empty bins are left out of the first three.
    """
    conf, outcome = _confidence_and_outcome(y_true, y_prob, task)
    edges = _bin_edges(conf, n_bins, strategy) if conf.size else np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds (edges[i], edges[i + 1]]; the first bin also holds its lower edge.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=outcome, minlength=n_bins)
    used = count > 0
    return {
        "confidence": conf_sum[used] / count[used],
        "frequency": hit_sum[used] / count[used],
        "count": count[used],
        "edges": edges,
    }


def expected_calibration_error(
    y_true: ArrayLike, y_prob: ArrayLike, *, task: str = "binary", n_bins: int = 15, strategy: str = "uniform"
) -> float:
    """ECE: the count-weighted mean gap between confidence and observed frequency over bins.

    ``strategy="uniform"`` is the usual equal-width ECE (Guo et al. 2017); ``"quantile"`` gives
    the adaptive ECE, with bins of equal counts (Nixon et al. 2019). Arguments as for
    :func:`reliability_curve`.
    """
    curve = reliability_curve(y_true, y_prob, task=task, n_bins=n_bins, strategy=strategy)
    total = curve["count"].sum()
    if total == 0:
        warnings.warn("expected_calibration_error: no labelled samples; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    gaps = np.abs(curve["confidence"] - curve["frequency"])
    return float((gaps * curve["count"]).sum() / total)


def debiased_l2_calibration_error(
    y_true: ArrayLike, y_prob: ArrayLike, *, task: str = "binary", n_bins: int = 15
) -> float:
    """The l2 calibration error with the binning estimator's small-sample bias removed (Kumar et al. 2019).

    Over equal-count bins ``b`` with ``n_b`` items, mean confidence ``c_b`` and observed frequency ``f_b``:
    ``sqrt(max(0, sum_b (n_b / n) * ((f_b - c_b)^2 - f_b (1 - f_b) / (n_b - 1))))``; bins of one item
    add nothing. The plain ECE of a perfectly calibrated model is far from 0 on a few hundred
    images (its noise, not the model's); this estimate is not. Since the l1 calibration error never
    exceeds the l2 one, it also bounds the ECE's target quantity from above. Arguments as for
    :func:`reliability_curve`.
    """
    curve = reliability_curve(y_true, y_prob, task=task, n_bins=n_bins, strategy="quantile")
    n, conf, freq = curve["count"], curve["confidence"], curve["frequency"]
    if n.sum() == 0:
        warnings.warn("debiased_l2_calibration_error: no labelled samples; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    many = n > 1
    terms = np.where(many, (freq - conf) ** 2 - freq * (1 - freq) / np.maximum(n - 1, 1), 0.0)
    return float(np.sqrt(max(0.0, float((terms * n).sum() / n.sum()))))


def brier_score(y_true: ArrayLike, y_prob: ArrayLike, *, task: str = "binary") -> float:
    """Mean squared error of the probabilities against one-hot outcomes.

    Binary and multi-label: ``mean((p - y)^2)`` over known labels. Multi-class and ordinal: the
    multi-class Brier score ``mean_i sum_k (p_ik - [y_i = k])^2`` (0 is perfect, 2 is worst).
    """
    labels, probs = check_task_inputs(y_true, y_prob, task)
    known = ~np.isnan(labels)
    if not known.any():
        warnings.warn("brier_score: no labelled samples; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    if task in ("binary", "multilabel"):
        p = probs[:, 1] if task == "binary" and probs.ndim == 2 else probs
        return float(np.mean((p[known] - labels[known]) ** 2))
    probs, labels = probs[known], labels[known].astype(int)
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_summary(y_true: ArrayLike, y_prob: ArrayLike, *, task: str, n_bins: int = 15) -> dict[str, float]:
    """``{"ece", "ece_adaptive", "ce_l2_debiased", "brier"}`` for ``metrics.json``."""
    return {
        "ece": expected_calibration_error(y_true, y_prob, task=task, n_bins=n_bins),
        "ece_adaptive": expected_calibration_error(y_true, y_prob, task=task, n_bins=n_bins, strategy="quantile"),
        "ce_l2_debiased": debiased_l2_calibration_error(y_true, y_prob, task=task, n_bins=n_bins),
        "brier": brier_score(y_true, y_prob, task=task),
    }
