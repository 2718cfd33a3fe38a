"""Evaluate a trained model on dataset splits: operating point on validation, metrics, curves, report.

Writes ``metrics.json`` (``{"dataset", "task", "label_names", "splits": {"val": {...}, "test": {...}}}``
with ``auc`` and ``acc`` first in each split; binary tasks add ``positive_class``, the class whose
sensitivity, operating point and referral figures these are) and a self-contained ``report.html``.
A binary checkpoint's ``positive_index`` (1 when absent) selects that class everywhere here.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.data.dataset import Dataset
from medclass.inference import predict_logits, split_tabular
from medclass.metrics.calibration import calibration_summary, reliability_curve
from medclass.metrics.positive import positive_index
from medclass.metrics.report import choose_threshold, curves, evaluate_predictions
from medclass.tasks import logits_to_probs
from medclass.trust.scaling import apply_calibration, fit_calibration
from medclass.utils.files import write_json

# MedMNIST v2 test AUC/ACC (Yang et al., Sci Data 2023), for printing beside our results.
MEDMNIST_REFERENCE: dict[str, list[tuple[str, float, float]]] = {
    "pneumoniamnist": [
        ("ResNet-18 (28)", 0.944, 0.854),
        ("ResNet-18 (224)", 0.956, 0.864),
        ("ResNet-50 (28)", 0.948, 0.854),
        ("ResNet-50 (224)", 0.962, 0.884),
        ("auto-sklearn", 0.942, 0.855),
        ("AutoKeras", 0.947, 0.878),
        ("Google AutoML Vision", 0.991, 0.946),
    ],
    "breastmnist": [
        ("ResNet-18 (28)", 0.901, 0.863),
        ("ResNet-18 (224)", 0.891, 0.833),
        ("ResNet-50 (28)", 0.857, 0.812),
        ("ResNet-50 (224)", 0.866, 0.842),
        ("auto-sklearn", 0.836, 0.803),
        ("AutoKeras", 0.871, 0.831),
        ("Google AutoML Vision", 0.919, 0.861),
    ],
    "adrenalmnist3d": [
        ("ResNet-18+2.5D", 0.718, 0.772),
        ("ResNet-18+3D", 0.827, 0.721),
        ("ResNet-18+ACS", 0.839, 0.754),
        ("ResNet-50+2.5D", 0.732, 0.763),
        ("ResNet-50+3D", 0.828, 0.745),
        ("ResNet-50+ACS", 0.828, 0.758),
        ("auto-sklearn", 0.828, 0.802),
        ("AutoKeras", 0.804, 0.705),
    ],
}


def reference_rows(dataset_name: str) -> list[dict[str, Any]]:
    """Published MedMNIST v2 rows for a dataset (empty when none are known)."""
    return [{"method": m, "auc": a, "acc": c} for m, a, c in MEDMNIST_REFERENCE.get(dataset_name, [])]


def _report_curves(c: dict[str, Any]) -> dict[str, Any]:
    """Metrics' curve format -> the report's ``{"roc": {name: {x, y}}, "pr": {name: {x, y}}}``."""
    return {
        "roc": {k: {"x": v["roc"]["fpr"], "y": v["roc"]["tpr"]} for k, v in c.items()},
        "pr": {k: {"x": v["pr"]["recall"], "y": v["pr"]["precision"]} for k, v in c.items()},
    }


def evaluate_model(
    model: nn.Module,
    meta: dict[str, Any],
    dataset: Dataset,
    *,
    splits: tuple[str, ...] = ("val", "test"),
    threshold: Any = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 512,
    logits: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Predict and score ``splits`` of ``dataset``.

    Args:
        model: The trained model.
        meta: Its ``model.json`` metadata (task, preprocessing, label names, operating point method).
        dataset: Data whose images match the model's preprocessing.
        splits: Splits to score.
        threshold: Operating threshold; ``None`` chooses one on ``val`` (binary and multi-label only).
        n_bootstrap: Bootstrap resamples for the confidence intervals.
        seed: Bootstrap seed.
        batch_size: Inference batch size.
        logits: Uncalibrated logits ``(N, outputs)`` already computed for some splits (the others are predicted).

    Returns:
        ``(metrics, curves, probs)``: the metrics.json dict, plot curves per split, probabilities per split.
    """
    task, prep, calibration = meta["task"], meta["preprocessing"], meta.get("calibration")
    pos = positive_index(meta)
    wanted = tuple(splits) + (("val",) if threshold is None and "val" in dataset.splits and "val" not in splits else ())
    given = logits or {}
    logits = {s: given.get(s) for s in wanted}
    for s, z in logits.items():
        if z is None:
            split = dataset.splits[s]
            logits[s] = predict_logits(model, split.images, prep, batch_size, tabular=split_tabular(prep, split))
    raw = {s: logits_to_probs(z, task).numpy() for s, z in logits.items()}
    probs = {s: logits_to_probs(apply_calibration(z, calibration), task).numpy() for s, z in logits.items()}
    if threshold is None and task in ("binary", "multilabel") and "val" in dataset.splits:
        op = meta.get("operating_point") or {}
        method = op.get("method", "youden")
        threshold = choose_threshold(
            dataset.splits["val"].labels,
            probs["val"],
            task=task,
            method=method,
            target_sensitivity=op.get("target_sensitivity") if method == "sensitivity" else None,
            positive_index=pos,
        )
    if isinstance(threshold, float) and math.isnan(threshold):
        threshold = None
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "task": task,
        "label_names": list(meta["label_names"]),
        **({"positive_class": str(meta["label_names"][pos])} if task == "binary" else {}),
        "splits": {},
    }
    plot: dict[str, Any] = {}
    for s in splits:
        split = dataset.splits[s]
        metrics["splits"][s] = evaluate_predictions(
            split.labels,
            probs[s],
            task=task,
            label_names=meta["label_names"],
            operating_threshold=threshold if task in ("binary", "multilabel") else None,
            groups=split.patient_ids,
            n_bootstrap=n_bootstrap,
            seed=seed,
            positive_index=pos,
        )
        metrics["splits"][s]["calibration"] = _calibration_entry(split.labels, raw[s], probs[s], task, calibration)
        metrics["splits"][s].update(trust_metrics(meta, split.labels, probs[s]))
        if split.cases is not None:
            metrics["splits"][s]["cases"] = case_metrics(split, logits[s], meta, threshold, n_bootstrap, seed)
        plot[s] = _report_curves(
            curves(split.labels, probs[s], task=task, label_names=meta["label_names"], positive_index=pos)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a split without labels: nan, already warned about
            plot[s]["reliability"] = {
                k: {key: v.tolist() for key, v in reliability_curve(split.labels, p, task=task).items()}
                for k, p in (("before", raw[s]), ("after", probs[s]))
            }
    metrics["threshold"] = threshold
    if "test" in splits:
        _add_test_figures(plot["test"], model, {**meta, "threshold": threshold}, dataset.splits["test"], probs["test"])
    return metrics, plot, {s: probs[s] for s in splits}


def case_metrics(
    split: Any, logits: torch.Tensor, meta: dict[str, Any], threshold: Any, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Metrics of one prediction per case (``split.cases``): the mean of its images' uncalibrated logits ``(N, K)``,
    then the run's calibration; bootstrap intervals resample cases. Adds ``n_cases``, ``images_per_case`` and
    ``mixed_labels`` (cases whose images carry different labels; the most common one is used)."""
    from medclass.metrics.cases import Cases

    task = meta["task"]
    cases = Cases.of(split.cases)
    z = cases.mean_logits(logits)
    probs = logits_to_probs(apply_calibration(z, meta.get("calibration")), task).numpy()
    labels, mixed = cases.labels(split.labels)
    out = evaluate_predictions(
        labels,
        probs,
        task=task,
        label_names=meta["label_names"],
        operating_threshold=threshold if task in ("binary", "multilabel") else None,
        n_bootstrap=n_bootstrap,
        seed=seed,
        positive_index=positive_index(meta),
    )
    out.update(n_cases=len(cases), images_per_case=round(float(cases.sizes().mean()), 3), mixed_labels=mixed)
    return out


def _add_test_figures(plot: dict[str, Any], model: nn.Module, meta: dict[str, Any], split: Any, probs: Any) -> None:
    """The report's risk-coverage curve and Grad-CAM gallery of the test split (where the task has them)."""
    from medclass.explain.gallery import gallery
    from medclass.trust.selective import risk_coverage_curve

    task = meta["task"]
    if task == "multilabel":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = None if meta.get("threshold") is None else float(meta["threshold"])
        rc = risk_coverage_curve(split.labels, probs, task=task, threshold=t, positive_index=positive_index(meta))
    step = max(1, len(rc["coverage"]) // 200)
    plot["risk_coverage"] = {"coverage": rc["coverage"][::step].tolist(), "risk": rc["risk"][::step].tolist()}
    plot["gallery"] = gallery(model, meta, split.images, split.labels, probs)


def _calibration_entry(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, task: str, calibration: dict[str, Any] | None
) -> dict[str, Any]:
    """``metrics.json``'s calibration figures of one split: after the stored calibration, and before it."""
    entry: dict[str, Any] = {"method": (calibration or {}).get("method", "none")}
    if calibration and calibration["method"] == "temperature":
        entry["temperature"] = calibration["temperature"]
        if "fitted" in calibration:  # the fitted value, kept at 1 when the validation split gave no evidence
            entry["fitted_temperature"] = calibration["fitted"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a split without labels: nan, already warned about
        entry.update(calibration_summary(labels, calibrated, task=task))
        entry["uncalibrated"] = calibration_summary(labels, raw, task=task)
    return entry


def fit_val_calibration(
    val_logits: torch.Tensor, val_labels: np.ndarray, task: str, method: str
) -> dict[str, Any] | None:
    """Fit ``method`` (temperature or vector scaling) on the validation split's logits; the checkpoint's entry."""
    if method == "none" or len(val_labels) == 0:
        return None
    return fit_calibration(val_logits.numpy(), val_labels, task, method)


def write_evaluation(
    out_dir: str | Path,
    metrics: dict[str, Any],
    plot: dict[str, Any],
    *,
    history: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    title: str = "medclass run",
) -> None:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir`` (atomically)."""
    from medclass.report import write_report

    out_dir = Path(out_dir)
    rows = reference_rows(metrics["dataset"])
    report_metrics = dict(metrics, reference=rows) if rows else metrics
    write_json(out_dir / "metrics.json", metrics)
    write_report(
        out_dir / "report.html", title=title, metrics=report_metrics, curves=plot, history=history, config=config
    )


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's ``history.csv`` as a list of dicts with numbers parsed (empty when missing)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(fh)]


def fit_referral(
    meta: dict[str, Any], val_labels: np.ndarray, val_probs: np.ndarray, *, alpha: float, target_sensitivity: float
) -> dict[str, Any]:
    """Conformal thresholds and (binary) the referral cut, fitted on validation; entries for ``model.json``.

    Returns ``{}`` for multi-label tasks, which have neither.
    """
    from medclass.trust.conformal import fit_conformal
    from medclass.trust.selective import referral_cut

    task = meta["task"]
    if task == "multilabel" or len(val_labels) == 0:
        return {}
    entries: dict[str, Any] = {"conformal": fit_conformal(val_probs, val_labels)}
    referral: dict[str, Any] = {"alpha": alpha}
    if task == "binary":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = 0.5 if meta.get("threshold") is None else float(meta["threshold"])
            cut = referral_cut(
                val_labels,
                val_probs,
                threshold=t,
                target_sensitivity=target_sensitivity,
                positive_index=positive_index(meta),
            )
        referral.update(target_sensitivity=target_sensitivity, cut=cut["cut"] if math.isfinite(cut["cut"]) else None)
    entries["referral"] = referral
    return entries


def referral_flags(meta: dict[str, Any], probs: np.ndarray, *, alpha: float | None = None) -> tuple[Any, Any]:
    """``(sets (N, K) bool, refer (N,) bool)`` for calibrated ``probs`` from a checkpoint's stored entries.

    ``(None, None)`` when the checkpoint has no conformal thresholds (multi-label, or older runs).
    Binary cases are referred when their certainty is below the stored cut; multi-class cases when
    their prediction set is not a single class.
    """
    from medclass.trust.conformal import prediction_sets, threshold_for
    from medclass.trust.selective import certainty

    conformal, referral = meta.get("conformal"), meta.get("referral") or {}
    if not conformal:
        return None, None
    level = alpha if alpha is not None else float(referral.get("alpha", 0.1))
    sets = prediction_sets(probs, threshold_for(conformal, level), lam=conformal["lam"], k_reg=conformal["k_reg"])
    if meta["task"] == "binary":
        cut = referral.get("cut")
        t = 0.5 if meta.get("threshold") is None else float(meta["threshold"])
        refer = certainty(probs, "binary", t, positive_index=positive_index(meta)) < (
            math.inf if cut is None else float(cut)
        )
    else:
        refer = sets.sum(1) != 1
    return sets, refer


def trust_metrics(meta: dict[str, Any], labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Conformal coverage at alpha 0.1 and 0.05, the risk-coverage area and the referral figures of one split."""
    from medclass.trust.conformal import prediction_sets, set_metrics, threshold_for
    from medclass.trust.selective import referral_summary, risk_coverage_curve

    conformal = meta.get("conformal")
    if not conformal:
        return {}
    out: dict[str, Any] = {"conformal": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for alpha in (0.1, 0.05):
            sets = prediction_sets(
                probs, threshold_for(conformal, alpha), lam=conformal["lam"], k_reg=conformal["k_reg"]
            )
            out["conformal"][str(alpha)] = set_metrics(sets, labels)
        t = None if meta.get("threshold") is None else float(meta["threshold"])
        pos = positive_index(meta)
        out["aurc"] = risk_coverage_curve(labels, probs, task=meta["task"], threshold=t, positive_index=pos)["aurc"]
        referral = meta.get("referral") or {}
        if meta["task"] == "binary" and "target_sensitivity" in referral:
            cut = referral.get("cut")
            summary = referral_summary(
                labels, probs, math.inf if cut is None else cut, threshold=t or 0.5, positive_index=pos
            )
            out["referral"] = {"target_sensitivity": referral["target_sensitivity"], **summary}
    return out


def fit_post_training(
    model: nn.Module,
    meta: dict[str, Any],
    dataset: Dataset,
    eval_cfg: Any,
    *,
    seed: int = 0,
    splits: tuple[str, ...] = ("val", "test"),
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Everything fitted on validation after training, then the evaluation of every split.

    In order: calibration (``eval_cfg.calibration``), the operating threshold (on calibrated
    probabilities), conformal thresholds and the referral cut. ``meta`` (the checkpoint's
    ``model.json`` content) is updated in place with all four.

    Returns:
        ``(metrics, plot, probs)`` as :func:`evaluate_model` gives them, with the trust figures added.
    """
    val = dataset.splits["val"]
    prep = meta["preprocessing"]
    val_logits = predict_logits(model, val.images, prep, tabular=split_tabular(prep, val))
    meta["calibration"] = fit_val_calibration(val_logits, val.labels, meta["task"], eval_cfg.calibration)
    splits = tuple(dict.fromkeys(("val", *splits)))  # validation first: everything is fitted there
    metrics, plot, probs = evaluate_model(
        model, meta, dataset, splits=splits, n_bootstrap=eval_cfg.n_bootstrap, seed=seed, logits={"val": val_logits}
    )
    meta["threshold"] = metrics["threshold"]
    meta.update(
        fit_referral(
            meta, val.labels, probs["val"], alpha=eval_cfg.alpha, target_sensitivity=eval_cfg.referral_sensitivity
        )
    )
    for name, split_probs in probs.items():
        metrics["splits"][name].update(trust_metrics(meta, dataset.splits[name].labels, split_probs))
    return metrics, plot, probs
