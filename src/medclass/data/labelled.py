"""Label subsets: keep the labels of only some training images (``data.labels``), the rest unlabelled.

:func:`label_subset` draws the labelled rows stratified by class and whole by patient (or group), so a
patient's images are never split between the labelled and the unlabelled side, and every class in the
split keeps at least one labelled image. The draw depends only on the split and the seed.
"""

from __future__ import annotations

import logging

import numpy as np

from medclass.data.dataset import Split
from medclass.errors import ConfigError

log = logging.getLogger(__name__)


def requested_count(labels: float, known: int) -> int:
    """The number of labelled images ``data.labels`` asks for, out of ``known`` images with a label.

    Args:
        labels: A number of images (>= 1, whole) or a share of them (strictly between 0 and 1).
        known: Training images whose label is known.

    Returns:
        The count, at least 1.

    Raises:
        ConfigError: ``labels`` <= 0, not a whole number when >= 1, or more than ``known``.
    """
    value = float(labels)
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"data.labels: {labels!r} must be a number of images (>= 1) or a share between 0 and 1")
    if value < 1:
        return max(1, int(round(value * known)))
    if value != int(value):
        raise ConfigError(f"data.labels: {labels!r} is neither a whole number of images nor a share below 1")
    if int(value) > known:
        raise ConfigError(f"data.labels: {int(value)} labelled images asked for, but the training split holds {known}")
    return int(value)


def _group_ids(split: Split) -> np.ndarray:
    """``(N,)`` int64 group of each row: its patient's index (IDs sorted), or the row itself without patient IDs."""
    if split.patient_ids is None:
        return np.arange(len(split))
    return np.unique(np.asarray(split.patient_ids).astype(str), return_inverse=True)[1].reshape(-1)


def _targets(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class labelled counts: ``n`` shared in proportion to ``counts`` (largest remainder), >= 1 per present class.

    Args:
        counts: ``(K,)`` images per class.
        n: Labelled images wanted.

    Returns:
        ``(K,)`` int64 targets, at most ``counts``; their sum is ``n`` unless one per class needs more.
    """
    exact = n * counts / max(counts.sum(), 1)
    target = np.floor(exact).astype(np.int64)
    for c in np.argsort(-(exact - target), kind="stable")[: max(0, n - int(target.sum()))]:
        target[c] += 1
    target = np.where(counts > 0, np.clip(target, 1, counts), 0)
    while target.sum() > n and target.max() > 1:  # the one-per-class minimum is paid by the largest classes
        target[np.argmax(target)] -= 1
    return target


def _take_multilabel(positives: np.ndarray, sizes: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """Groups to label, multi-label: one with a positive per label (rarest label first), then more in ``order``.

    Args:
        positives: ``(G, L)`` whether a group has a positive for each label.
        sizes: ``(G,)`` known-label images per group.
        order: Eligible group indices in random order.
        n: Labelled images wanted.

    Returns:
        ``(G,)`` bool: the groups taken.
    """
    taken = np.zeros(len(sizes), dtype=bool)
    for c in np.argsort(positives[order].sum(axis=0), kind="stable"):
        has = order[positives[order, c]]
        if len(has) and not taken[has].any():
            taken[has[0]] = True
    for i in order:
        if sizes[taken].sum() >= n:
            break
        taken[i] = True
    return taken


def _take_stratified(counts: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """Groups to label, single-label: class by class (rarest first) until each class's target count is met.

    Args:
        counts: ``(G, K)`` known-label images of each class per group.
        order: Eligible group indices in random order.
        n: Labelled images wanted.

    Returns:
        ``(G,)`` bool: the groups taken.
    """
    per_class = counts.sum(axis=0)
    target = _targets(per_class, n)
    if target.sum() > n:
        log.warning("data.labels: %d images asked for, but each of %d classes keeps one", n, int((per_class > 0).sum()))
    primary = counts.argmax(axis=1)
    taken = np.zeros(len(counts), dtype=bool)
    chosen = np.zeros(counts.shape[1], dtype=np.int64)
    for c in np.argsort(per_class, kind="stable"):
        # groups mostly of class c first, then (for the one-per-class guarantee) any group holding class c
        for candidates in (order[primary[order] == c], order[counts[order, c] > 0]):
            for i in candidates:
                if chosen[c] >= target[c]:
                    break
                if not taken[i]:
                    taken[i] = True
                    chosen += counts[i]
    return taken


def label_subset(split: Split, labels: float, seed: int, task: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose the training rows that keep their label; the others become unlabelled.

    Single-label tasks (binary, multi-class, ordinal) are stratified: each class gets its share of the
    labelled images (largest remainder, at least one per class present). Rows are taken a whole
    patient at a time when ``split.patient_ids`` is set, rarest class first, so the counts are then
    approximate (a patient's other images come along). Multi-label tasks take random patients, after
    one patient with a positive for each label that has one. Counts are of images with a known label;
    a row whose label is unknown (NaN) stays with its patient, and a patient with no known label is
    never labelled.

    Args:
        split: The training split; ``labels`` ``(N,)`` or ``(N, L)``, optional ``patient_ids`` ``(N,)``.
        labels: A number of images (>= 1) or a share of the known-label images (between 0 and 1).
        seed: Seed of the draw; the same seed gives the same rows.
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        num_classes: Classes (labels for multi-label).

    Returns:
        ``(labelled, unlabelled)``: sorted int64 row indices, together every row of ``split`` once.

    Raises:
        ConfigError: ``labels`` <= 0, not whole (>= 1), or more than the split's known labels.
    """
    y = np.asarray(split.labels, dtype=np.float64)
    known = ~np.isnan(y).all(axis=1) if y.ndim == 2 else ~np.isnan(y)
    n = requested_count(labels, int(known.sum()))
    gid = _group_ids(split)
    groups = int(gid.max()) + 1 if len(gid) else 0
    sizes = np.bincount(gid[known], minlength=groups)
    order = np.random.default_rng(seed).permutation(np.flatnonzero(sizes > 0))  # groups with a known label
    if y.ndim == 2 or task == "multilabel":
        positives = np.zeros((groups, y.shape[1]), dtype=bool)
        np.logical_or.at(positives, gid, np.nan_to_num(y, nan=0.0) > 0.5)
        taken = _take_multilabel(positives, sizes, order, n)
    else:
        counts = np.zeros((groups, max(num_classes, int(y[known].max()) + 1)), dtype=np.int64)
        np.add.at(counts, (gid[known], y[known].astype(np.int64)), 1)
        taken = _take_stratified(counts, order, n)
    labelled = np.flatnonzero(taken[gid]).astype(np.int64)
    unlabelled = np.flatnonzero(~taken[gid]).astype(np.int64)
    return labelled, unlabelled
