"""AUC and ACC exactly as MedMNIST's evaluator (``medmnist.evaluator.getAUC`` / ``getACC``) defines them.

These are the two numbers MedMNIST's benchmark tables report, so results can be compared with the
published baselines:

* AUC. binary: AUC of column 1; multiclass/ordinal: mean over classes of the one-vs-rest AUC of
  column k; multilabel: mean over labels of the AUC of column l.
* ACC. binary: accuracy of ``score[:, 1] > threshold`` (strictly greater, as MedMNIST);
  multiclass/ordinal: accuracy of ``argmax``; multilabel: mean over labels of the accuracy of
  ``score[:, l] > threshold``. A binary ``acc`` at an operating threshold on P(positive) of a task
  whose positive class is 0 (BreastMNIST) takes ``positive_index=0``; the benchmark figure keeps 1.

Unlike MedMNIST (which fails), unknown labels (NaN) are dropped per label, and classes or labels
whose AUC/ACC is undefined are left out of the mean with an
:class:`~medclass.metrics.UndefinedMetricWarning`; when all are undefined the result is NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from medclass.errors import UndefinedMetricWarning
from medclass.metrics.classification import check_task_inputs, roc_auc
from medclass.metrics.positive import binary_decision

_NAN = float("nan")


def _mean_defined(values: list[float], what: str) -> float:
    """Mean of the non-NaN values; warns when some are NaN and returns NaN when all are."""
    array = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(array)
    if not defined.all():
        skipped = np.flatnonzero(~defined).tolist()
        warnings.warn(f"{what}: undefined for {skipped}, left out of the mean", UndefinedMetricWarning, stacklevel=3)
    if not defined.any():
        return _NAN
    return float(array[defined].mean())


def one_vs_rest_targets(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot targets of class indices, keeping unknown labels unknown.

    Args:
        y_true: Class indices, shape (N,), NaN = unknown.
        num_classes: Number of classes K.

    Returns:
        Float array of shape (N, K): 1 where ``y_true == k``, 0 elsewhere, NaN on unknown rows.
    """
    targets = (y_true[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
    targets[np.isnan(y_true)] = np.nan
    return targets


def auc(y_true: ArrayLike, y_score: ArrayLike, task: str) -> float:
    """MedMNIST's AUC.

    Args:
        y_true: Class indices, shape (N,) (or (N, 1)), or multilabel 0/1 of shape (N, L); NaN = unknown.
        y_score: Probabilities, shape (N, K) (binary K = 2, column 1 the positive class).
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.

    Returns:
        The AUC, a float in [0, 1] or NaN.
    """
    labels, score = check_task_inputs(y_true, y_score, task)
    if task == "binary":
        return roc_auc(labels, score[:, 1])
    targets = labels if task == "multilabel" else one_vs_rest_targets(labels, score.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        per_column = [roc_auc(targets[:, k], score[:, k]) for k in range(score.shape[1])]
    return _mean_defined(per_column, f"auc ({task})")


def acc(y_true: ArrayLike, y_score: ArrayLike, task: str, threshold: float = 0.5, *, positive_index: int = 1) -> float:
    """MedMNIST's ACC.

    Args:
        y_true: Class indices, shape (N,) (or (N, 1)), or multilabel 0/1 of shape (N, L); NaN = unknown.
        y_score: Probabilities, shape (N, K) (binary K = 2, column 1 the positive class).
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        threshold: Binary/multilabel decision threshold; a score strictly above it is positive.
        positive_index: Binary: the column ``threshold`` applies to. MedMNIST's ACC is the default, 1;
            an operating threshold on P(positive) of a task whose positive class is 0 needs 0.

    Returns:
        The accuracy, a float in [0, 1] or NaN.
    """
    labels, score = check_task_inputs(y_true, y_score, task)
    if task == "multilabel":
        per_label = []
        for k in range(score.shape[1]):
            known = ~np.isnan(labels[:, k])
            correct = (score[known, k] > threshold) == (labels[known, k] == 1)
            per_label.append(float(correct.mean()) if correct.size else _NAN)
        return _mean_defined(per_label, "acc (multilabel)")
    known = ~np.isnan(labels)
    if not known.any():
        warnings.warn(f"acc ({task}): no sample with a known label", UndefinedMetricWarning, stacklevel=2)
        return _NAN
    if task == "binary":
        predicted = binary_decision(score[known], threshold, positive_index, inclusive=False).astype(np.float64)
    else:
        predicted = np.argmax(score[known], axis=1).astype(np.float64)
    return float(np.mean(predicted == labels[known]))
