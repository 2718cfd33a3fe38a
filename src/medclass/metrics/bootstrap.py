"""Percentile bootstrap confidence intervals, by row or by patient (cluster bootstrap).

A resample is represented by how many times each row is drawn, an int array of shape (N,). Row
bootstrap: N rows are drawn with replacement. Cluster bootstrap (``groups`` given, e.g. patient
IDs): G groups are drawn with replacement and every drawn group contributes all its rows, so rows
of one patient always stay together. Both are produced in chunks of shape (B, N) by
:func:`resample_weights`, which lets statistics be computed for many resamples at once.

:func:`bootstrap_ci` evaluates any metric ``fn(*arrays)`` on each resample. For
:func:`~medclass.metrics.classification.roc_auc` and
:func:`~medclass.metrics.classification.accuracy` it uses vectorised weighted versions (rows are binned
once, then one weighted ``np.bincount`` scores every resample), which give the same values as
calling the function on each resample.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medclass.errors import UndefinedMetricWarning
from medclass.metrics.classification import _as_1d, accuracy, roc_auc

# Largest chunk of the (B, N) weight matrix held at once (float64: 32 MB).
_MAX_ELEMENTS = 4_000_000


def resample_weights(
    n_rows: int, *, groups: ArrayLike | None = None, n_resamples: int = 1000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Draws bootstrap resamples as per-row draw counts.

    Args:
        n_rows: Number of rows N.
        groups: Optional group (patient) ID of each row, shape (N,); groups are resampled with
            replacement and keep all their rows.
        n_resamples: Total number of resamples B.
        seed: Seed of the random generator; the same seed gives the same resamples.

    Yields:
        int64 arrays of shape (b, N), b <= B, summing to B rows over all chunks: entry [i, j] is
        how many times row j is in resample i.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        inverse = None
        n_units = n_rows
    else:
        group_ids = np.asarray(groups)
        if group_ids.shape != (n_rows,):
            raise ValueError(f"groups must have shape ({n_rows},), got {group_ids.shape}")
        _, inverse = np.unique(group_ids, return_inverse=True)
        inverse = inverse.reshape(-1)
        n_units = int(inverse.max()) + 1 if n_rows else 0
    chunk = max(1, _MAX_ELEMENTS // max(n_rows, n_units, 1))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        draws = rng.integers(0, max(n_units, 1), size=(size, n_units))
        flat = (draws + n_units * np.arange(size)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n_units).reshape(size, n_units)
        yield counts if inverse is None else counts[:, inverse]
        done += size


def percentile_interval(samples: ArrayLike, confidence: float = 0.95, *, what: str = "bootstrap_ci") -> tuple[Any, Any]:
    """Percentile interval of bootstrap replicates, ignoring NaN replicates.

    Args:
        samples: Replicates, shape (B,) or (B, M) for M statistics.
        confidence: Coverage of the interval, in (0, 1).
        what: Name used in the warning.

    Returns:
        ``(low, high)``: floats for (B,) input, arrays of shape (M,) for (B, M) input. A statistic
        with fewer than half of its replicates defined gets (nan, nan) and a warning.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(samples, dtype=np.float64)
    table = values.reshape(values.shape[0], -1)
    n_defined = np.sum(~np.isnan(table), axis=0)
    usable = (n_defined > 0) & (2 * n_defined >= table.shape[0])
    low = np.full(table.shape[1], np.nan)
    high = np.full(table.shape[1], np.nan)
    if usable.any():
        alpha = (1.0 - confidence) / 2.0
        bounds = np.nanpercentile(table[:, usable], [100.0 * alpha, 100.0 * (1.0 - alpha)], axis=0)
        low[usable], high[usable] = bounds[0], bounds[1]
    if table.shape[0] and not usable.all():
        warnings.warn(
            f"{what}: fewer than half of the resamples give a defined value for "
            f"{int(np.sum(~usable))} of {table.shape[1]} statistic(s); interval is NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    if values.ndim == 1:
        return float(low[0]), float(high[0])
    return low, high


def weighted_roc_auc(y_true: ArrayLike, y_score: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """ROC AUC of many weighted copies of one binary problem at once.

    With integer weights (bootstrap draw counts) the result equals
    :func:`~medclass.metrics.classification.roc_auc` on the rows repeated by their weight.

    Args:
        y_true: Binary labels, shape (N,), 0/1 or NaN (unknown, ignored).
        y_score: Scores of the positive class, shape (N,).
        weights: Non-negative weights, shape (B, N) (or (N,)).

    Returns:
        AUCs, shape (B,); NaN where a weighted copy lacks one of the classes.
    """
    labels = _as_1d("y_true", y_true)
    score = _as_1d("y_score", y_score)
    weight = np.ascontiguousarray(weights, dtype=np.float64)
    weight = weight[None, :] if weight.ndim == 1 else weight
    if weight.shape[1] != labels.shape[0] or score.shape != labels.shape:
        raise ValueError("y_true, y_score and weights must have the same number of rows")
    # Mann-Whitney U = sum over positives of the weight of negatives scored below them plus half
    # of those tied with them. Rows are binned once by the distinct positive scores v[0..m-1]:
    # bins [0, m]: negatives not tied with any v, by how many v lie below them;
    # bins [m+1, 2m]: negatives tied with v[t]; bins [2m+1, 3m]: positives at v[t]; bin 3m+1:
    # unknown labels. A weighted bincount then gives every resample's bin totals in one pass.
    positive = labels == 1
    negative = labels == 0
    values = np.unique(score[positive])
    m = values.size
    n_bins = 3 * m + 2
    left = np.searchsorted(values, score, side="left")
    right = np.searchsorted(values, score, side="right")
    tied = right > left
    key = np.full(labels.shape[0], n_bins - 1, dtype=np.int64)
    key[negative & ~tied] = right[negative & ~tied]
    key[negative & tied] = m + 1 + left[negative & tied]
    key[positive] = 2 * m + 1 + left[positive]
    n_copies = weight.shape[0]
    flat = (key[None, :] + n_bins * np.arange(n_copies)[:, None]).ravel()
    totals = np.bincount(flat, weights=weight.ravel(), minlength=n_copies * n_bins).reshape(n_copies, n_bins)
    negatives_by_slot = totals[:, : m + 1].copy()
    negatives_tied = totals[:, m + 1 : 2 * m + 1]
    positives = totals[:, 2 * m + 1 : 3 * m + 1]
    negatives_by_slot[:, 1:] += negatives_tied  # a negative tied with v[t] is below v[t + 1], ...
    negatives_below = np.cumsum(negatives_by_slot, axis=1)[:, :m]
    u_statistic = np.einsum("bt,bt->b", positives, negatives_below + 0.5 * negatives_tied)
    pairs = positives.sum(axis=1) * negatives_by_slot.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, u_statistic / pairs, np.nan)


def weighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """Accuracy of many weighted copies of one problem at once.

    Args:
        y_true: Class indices, shape (N,), NaN = unknown (ignored).
        y_pred: Predicted class indices, shape (N,).
        weights: Non-negative weights, shape (B, N) (or (N,)).

    Returns:
        Accuracies, shape (B,); NaN where a copy has no weight on a known label.
    """
    labels = _as_1d("y_true", y_true)
    predicted = _as_1d("y_pred", y_pred)
    weight = np.asarray(weights, dtype=np.float64)
    weight = weight[None, :] if weight.ndim == 1 else weight
    known = ~np.isnan(labels)
    total = weight @ known.astype(np.float64)
    correct = weight @ (known & (labels == predicted)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / total, np.nan)


_WEIGHTED: dict[Callable[..., float], Callable[..., np.ndarray]] = {
    roc_auc: weighted_roc_auc,
    accuracy: weighted_accuracy,
}


def bootstrap_ci(
    fn: Callable[..., Any],
    *arrays: ArrayLike,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Percentile bootstrap confidence interval of ``fn(*arrays)``.

    Rows (the first axis of every array) are resampled with replacement; with ``groups`` the
    groups are resampled instead and keep all their rows (cluster bootstrap, e.g. by patient).
    Resamples where ``fn`` returns NaN are dropped (their warnings silenced); if fewer than half
    remain the interval is (nan, nan) with an :class:`~medclass.metrics.UndefinedMetricWarning`.

    Args:
        fn: Statistic, called as ``fn(*resampled_arrays)``; returns a float or an array of shape
            (M,) (then each entry gets its interval).
        *arrays: Arrays with the same first dimension N, e.g. ``y_true`` (N,) and ``y_score`` (N,).
        groups: Optional group ID of each row, shape (N,).
        n_resamples: Number of resamples B.
        confidence: Coverage of the interval, in (0, 1).
        seed: Random seed; the same seed gives the same interval.

    Returns:
        ``(low, high)``: floats, or arrays of shape (M,) for a vector-valued ``fn``.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    data = [np.asarray(array) for array in arrays]
    n_rows = data[0].shape[0]
    if any(array.shape[0] != n_rows for array in data):
        raise ValueError("all arrays must have the same number of rows")
    weighted = _WEIGHTED.get(fn)
    rows = np.arange(n_rows)
    replicates: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for weights in resample_weights(n_rows, groups=groups, n_resamples=n_resamples, seed=seed):
            if weighted is not None:
                replicates.append(weighted(*data, weights))
                continue
            for counts in weights:
                index = np.repeat(rows, counts)
                value = np.asarray(fn(*(array[index] for array in data)), dtype=np.float64)
                replicates.append(value[None])
    return percentile_interval(np.concatenate(replicates, axis=0), confidence)
