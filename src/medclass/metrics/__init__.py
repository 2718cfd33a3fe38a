"""Evaluation metrics for medical image classification, written in plain numpy.

The functions follow scikit-learn's manner (arrays in, floats out, options as keywords) but never
raise on a degenerate split: when a metric is undefined (an AUC with one class present, a
sensitivity without positives, ...) they return ``float('nan')`` and emit an
:class:`UndefinedMetricWarning`. Unknown labels are written as NaN in ``y_true`` and are dropped
(per label, for multilabel tasks) before anything is computed.

Modules:
    classification: binary building blocks (ROC/PR curves, AUCs, confusion matrix, rates, kappa).
    medmnist: ``auc`` and ``acc`` exactly as MedMNIST's evaluator defines them.
    operating_point: threshold selection (Youden, target sensitivity) and label prediction.
    positive: a binary task's positive class (the finding, not always class 1) and the triage key.
    bootstrap: percentile and patient-level (cluster) bootstrap confidence intervals.
    report: ``evaluate_predictions`` (the per-split dict of ``metrics.json``), ``curves``,
        ``choose_threshold``.
"""

from __future__ import annotations

from medclass.errors import UndefinedMetricWarning
from medclass.metrics.bootstrap import bootstrap_ci, percentile_interval, resample_weights
from medclass.metrics.classification import (
    TASKS,
    accuracy,
    average_precision,
    balanced_accuracy,
    binary_rates,
    check_task_inputs,
    cohen_kappa,
    confusion_matrix,
    per_class_stats,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from medclass.metrics.medmnist import acc, auc
from medclass.metrics.operating_point import predict_labels, threshold_for_sensitivity, youden_threshold
from medclass.metrics.report import choose_threshold, curves, evaluate_predictions

__all__ = [
    "TASKS",
    "UndefinedMetricWarning",
    "acc",
    "accuracy",
    "auc",
    "average_precision",
    "balanced_accuracy",
    "binary_rates",
    "bootstrap_ci",
    "check_task_inputs",
    "choose_threshold",
    "cohen_kappa",
    "confusion_matrix",
    "curves",
    "evaluate_predictions",
    "per_class_stats",
    "percentile_interval",
    "precision_recall_curve",
    "predict_labels",
    "resample_weights",
    "roc_auc",
    "roc_curve",
    "threshold_for_sensitivity",
    "youden_threshold",
]
