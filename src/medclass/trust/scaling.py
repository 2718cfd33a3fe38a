"""Post-hoc calibration of logits, fitted on the validation split and stored in the checkpoint.

* Temperature scaling (Guo et al. 2017): ``z / T`` with one ``T > 0``, fitted by minimising the
  negative log-likelihood. It never changes which class has the largest logit, so accuracy,
  AUC and the ranking of cases stay the same; only the confidence changes. The fitted ``T`` is
  used only when the validation split gives evidence against ``T = 1`` (a likelihood-ratio test
  at the 5% level): on a few dozen validation images the fitted value is mostly noise, and
  applying it made test calibration worse (BENCHMARKS.md, "trust").
* Vector scaling: ``z * w + b`` with one ``w`` and ``b`` per class (multi-class and ordinal), for
  classes that are over- or under-confident in different ways. It can change decisions.

The stored form is a small JSON dict (``{"method": "temperature", "temperature": 1.7}``), applied
by :func:`apply_calibration` wherever logits become probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medclass.errors import ConfigError

METHODS = ("none", "temperature", "vector")
CHI2_1DF_95 = 3.841  # the 95th percentile of the chi-square distribution with one degree of freedom


def _nll(logits: torch.Tensor, labels: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood over known labels, their mean or (``reduction="sum"``) their sum."""
    if task in ("binary", "multilabel"):
        target = labels.view(logits.shape) if task == "binary" else labels
        known = ~torch.isnan(target)
        return F.binary_cross_entropy_with_logits(logits[known], target[known], reduction=reduction)
    known = ~torch.isnan(labels)
    return F.cross_entropy(logits[known], labels[known].long(), reduction=reduction)


def _as_tensors(logits: Any, labels: Any, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if task == "binary":
        z, y = z.reshape(-1, 1), y.reshape(-1, 1)
    return z, y


def fit_temperature(logits: Any, labels: Any, task: str, *, max_iter: int = 200, prior_sd: float = 1.0) -> float:
    """The temperature ``T`` minimising the NLL of ``logits / T`` on ``labels``, with a weak prior on ``log T``.

    The prior (normal, mean 0, sd ``prior_sd``, weighted as one sample's worth of evidence) keeps
    ``T`` finite when a small validation split is perfectly separated, where the plain NLL
    keeps falling as ``T`` goes to 0; on hundreds of samples it changes ``T`` by well under 1%.

    Args:
        logits: ``(N, outputs)`` model logits (binary: one column).
        labels: ``(N,)`` class indices or ``(N, L)`` 0/1 labels; NaN = unknown (left out).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        max_iter: L-BFGS iterations.

    Returns:
        ``T`` (``> 1`` softens overconfident outputs); 1.0 when no label is known.
    """
    z, y = _as_tensors(logits, labels, task)
    if torch.isnan(y).all() or z.numel() == 0:
        return 1.0
    known = int((~torch.isnan(y)).any(dim=1).sum()) if y.ndim == 2 else int((~torch.isnan(y)).sum())
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z / log_t.exp(), y, task) + log_t.pow(2).sum() / (2 * prior_sd**2 * known)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def temperature_evidence(logits: Any, labels: Any, task: str, temperature: float) -> float:
    """The likelihood-ratio statistic of ``temperature`` against ``T = 1``: ``2 * (NLL(1) - NLL(T))``, NLLs summed.

    Under the hypothesis that the logits are already calibrated in temperature, it follows a
    chi-square distribution with one degree of freedom; above :data:`CHI2_1DF_95` the validation
    data show, at the 5% level, that ``T`` fits better than leaving the logits alone.

    Args:
        logits: ``(N, outputs)`` model logits (binary: one column).
        labels: ``(N,)`` class indices or ``(N, L)`` 0/1 labels; NaN = unknown (left out).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        temperature: The fitted ``T``.
    """
    z, y = _as_tensors(logits, labels, task)
    return float(2 * (_nll(z, y, task, "sum") - _nll(z / temperature, y, task, "sum")))


def fit_vector_scaling(
    logits: Any, labels: Any, task: str = "multiclass", *, max_iter: int = 300
) -> tuple[list[float], list[float]]:
    """Per-output ``w`` and ``b`` minimising the NLL of ``z * w + b`` (softmax for multi-class, sigmoid otherwise).

    For a binary head's single logit this is Platt scaling.

    Returns:
        ``(w, b)``, lists of one value per output.
    """
    z, y = _as_tensors(logits, labels, task)
    k = z.shape[1]
    w = torch.ones(k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    if torch.isnan(y).all():
        return [1.0] * k, [0.0] * k
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z * w + b, y, task)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().tolist(), b.detach().tolist()


def fit_calibration(logits: Any, labels: Any, task: str, method: str = "temperature") -> dict[str, Any] | None:
    """Fit ``method`` on validation logits; the dict the checkpoint stores (``None`` for ``none``).

    For temperature scaling the dict also keeps the ``fitted`` value and its likelihood-ratio
    ``evidence`` (:func:`temperature_evidence`); ``temperature`` is the fitted value when the
    evidence passes the 5% test and 1.0 otherwise.

    Raises:
        ConfigError: Unknown method, or vector scaling asked for a binary or multi-label task.
    """
    if method not in METHODS:
        raise ConfigError(f"eval.calibration: unknown method '{method}' (use {', '.join(METHODS)})")
    if method == "none":
        return None
    if method == "vector":
        if task not in ("multiclass", "ordinal"):
            raise ConfigError(f"eval.calibration: vector scaling is for multi-class tasks, not {task}")
        w, b = fit_vector_scaling(logits, labels)
        return {"method": "vector", "weight": w, "bias": b}
    fitted = fit_temperature(logits, labels, task)
    evidence = temperature_evidence(logits, labels, task, fitted)
    used = fitted if evidence > CHI2_1DF_95 else 1.0
    return {"method": "temperature", "temperature": used, "fitted": fitted, "evidence": evidence}


def apply_calibration(logits: torch.Tensor, calibration: dict[str, Any] | None) -> torch.Tensor:
    """Calibrated logits ``(N, outputs)`` (unchanged when ``calibration`` is ``None``)."""
    if not calibration:
        return logits
    if calibration["method"] == "temperature":
        return logits / float(calibration["temperature"])
    w = torch.tensor(calibration["weight"], dtype=logits.dtype)
    b = torch.tensor(calibration["bias"], dtype=logits.dtype)
    return logits * w + b
