"""What the loss takes from the configuration and the training labels: class weights and their prior correction.

:func:`loss_options` gives :func:`medclass.tasks.task_loss` its keyword options; :func:`correct_prior` folds the
correction of class weighting into the output layer before calibration.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.config import RunConfig
from medclass.data.dataset import Dataset, Split, label_counts
from medclass.errors import ConfigError
from medclass.tasks import prior_logit_offset

log = logging.getLogger(__name__)


def class_weights_for(split: Split, task: str, num_classes: int, mode: str | None) -> torch.Tensor | None:
    """``balanced`` class weights (n / (k * count)) from the training labels, or None."""
    if not mode:
        return None
    counts = label_counts(split.labels, num_classes).astype(np.float64)
    if task == "multilabel":
        known = (~np.isnan(split.labels)).sum(0)
        return torch.tensor(np.clip((known - counts) / np.maximum(counts, 1), 0, 100), dtype=torch.float32)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


def class_weight_mode(cfg: RunConfig, task: str) -> str | None:
    """``optim.class_weight`` as it applies to ``task``: ``None`` for argmax-decided tasks (multi-class,
    ordinal) when ``optim.class_weight_multiclass`` is false."""
    if task not in ("binary", "multilabel") and not cfg.optim.class_weight_multiclass:
        return None
    return cfg.optim.class_weight


def prior_correction(cfg: RunConfig, split: Split, task: str, num_classes: int) -> torch.Tensor | None:
    """The logit offset ``-log(w_c)`` that undoes class weighting at decision time, or None.

    Training with class weights ``w_c`` makes the softmax estimate ``w_c p(c|x)`` (renormalised), so
    the argmax favours rare classes. With ``optim.prior_correction`` (multi-class only: binary and
    multi-label decisions use a threshold chosen on validation), adding ``-log(w_c)`` to the logits
    gives back the posterior under the training prior; the argmax (ACC) then follows the true prior.
    """
    mode = class_weight_mode(cfg, task)
    if not (cfg.optim.prior_correction and mode and task in ("multiclass", "ordinal")):
        return None
    weights = class_weights_for(split, task, num_classes, mode)
    return None if weights is None else -torch.log(weights)


def correct_prior(model: nn.Module, meta: dict[str, Any], cfg: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """Fold :func:`prior_correction` into the bias of ``model``'s output layer (in place), once.

    The offset then travels with the weights (checkpoint, ensembles, ONNX export, prediction) and comes
    before calibration, which is fitted afterwards on the corrected logits. ``meta["logit_offset"]``
    records it (and that it is applied). Returns ``meta``.
    """
    if "logit_offset" in meta:
        return meta
    offset = prior_correction(cfg, dataset.splits["train"], meta["task"], dataset.num_classes)
    if offset is None:
        return meta
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == len(offset)]
    if not heads or heads[-1].bias is None:
        log.warning("optim.prior_correction: no output layer with a bias found; decisions keep the class weights")
        return meta
    with torch.no_grad():
        heads[-1].bias.add_(offset.to(heads[-1].bias))
    meta["logit_offset"] = [round(float(v), 6) for v in offset]
    return meta


def loss_options(cfg: RunConfig, split: Split, task: str, num_classes: int) -> dict[str, Any]:
    """Keyword options of :func:`~medclass.tasks.task_loss` from the config and the training labels."""
    o = cfg.optim
    if o.loss not in ("ce", "focal"):
        raise ConfigError(f"optim.loss: unknown loss '{o.loss}' (use ce or focal)")
    if cfg.train.sampler not in ("random", "balanced"):
        raise ConfigError(f"train.sampler: unknown sampler '{cfg.train.sampler}' (use random or balanced)")
    return {
        "label_smoothing": o.label_smoothing,
        "class_weights": class_weights_for(split, task, num_classes, class_weight_mode(cfg, task)),
        "focal_gamma": o.focal_gamma if o.loss == "focal" else 0.0,
        "logit_offset": prior_logit_offset(split.labels, task, num_classes, o.logit_adjust) if o.logit_adjust else None,
    }
