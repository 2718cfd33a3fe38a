"""Task semantics in one place: head size, loss and logits-to-probabilities for each task type.

* ``binary``: one logit, sigmoid; probabilities are reported as ``(N, 2)`` = ``[1 - p, p]``.
* ``multiclass`` and ``ordinal``: K logits, softmax (ordinal is trained as multi-class).
* ``multilabel``: L logits, independent sigmoids; NaN labels are masked out of the loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def num_outputs(task: str, num_classes: int) -> int:
    """Width of the model head for a task."""
    return 1 if task == "binary" else num_classes


def logits_to_probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    """``(N, outputs)`` logits -> ``(N, K)`` probabilities (K = 2 for binary)."""
    if task == "binary":
        p = torch.sigmoid(logits[:, 0].float())
        return torch.stack([1 - p, p], dim=1)
    if task == "multilabel":
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    *,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
    logit_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over known labels: cross-entropy, optionally focal and/or logit-adjusted.

    Args:
        logits: ``(B, outputs)``.
        labels: ``(B,)`` class indices or ``(B, L)`` 0/1, NaN = unknown (masked out); soft labels
            ``(B, K)`` for multi-class (mixing augmentations) are accepted too.
        task: Task type.
        label_smoothing: Mix targets with the uniform distribution (0.5 for sigmoid outputs).
        class_weights: ``(K,)`` per-class weights (binary: ``[w_neg, w_pos]``; multilabel: per-label positive weight).
        focal_gamma: Focal loss exponent (Lin et al. 2017): each term is scaled by ``(1 - p_t)^gamma``,
            so confidently right examples count less; 0 is plain cross-entropy.
        logit_offset: ``(outputs,)`` added to the logits inside the loss only (logit adjustment,
            Menon et al. 2021; see :func:`prior_logit_offset`); predictions use the raw logits.

    Returns:
        Scalar loss (0 with a gradient when every label in the batch is unknown).
    """
    logits = logits.float()
    if logit_offset is not None:
        logits = logits + logit_offset.to(logits.dtype)
    if task == "multilabel" or task == "binary":
        target = labels.float().reshape(logits.shape)
        known = ~torch.isnan(target)
        target = torch.nan_to_num(target, nan=0.0)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if focal_gamma:
            p = torch.sigmoid(logits)
            p_t = p * target + (1 - p) * (1 - target)
            loss = loss * (1 - p_t).clamp(min=0).pow(focal_gamma)
        weight = known.float()
        if class_weights is not None:
            if task == "binary":
                weight = weight * torch.where(target > 0.5, class_weights[1], class_weights[0])
            else:
                weight = weight * torch.where(target > 0.5, class_weights, torch.ones_like(class_weights))
        return (loss * weight).sum() / known.sum().clamp(min=1)
    logp = F.log_softmax(logits, dim=1)
    modulate = (1 - logp.exp()).clamp(min=0).pow(focal_gamma) if focal_gamma else torch.ones_like(logp)
    if labels.ndim == 2:  # soft targets (mixing); a zero row (unknown label) adds nothing
        per_row = -(labels * modulate * logp).sum(dim=1)
        if class_weights is None:
            return per_row.mean()
        w = labels @ class_weights.float()
        return (w * per_row).sum() / w.sum().clamp(min=1e-12)
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    k = logits.shape[1]
    target = labels[known].long()
    if label_smoothing:
        soft = torch.full((len(target), k), label_smoothing / k, device=logits.device)
        soft[torch.arange(len(target), device=logits.device), target] += 1 - label_smoothing
    else:
        soft = F.one_hot(target, k).float()
    per_row = -(soft * modulate[known] * logp[known]).sum(dim=1)
    w = torch.ones(len(target), device=logits.device) if class_weights is None else class_weights[target]
    return (w * per_row).sum() / w.sum()


def prior_logit_offset(labels: np.ndarray, task: str, num_classes: int, tau: float) -> torch.Tensor:
    """``tau * log(prior)`` per output, from the training labels, for logit-adjusted training.

    Multi-class: ``tau * log(pi_k)``. Binary and multi-label (sigmoid outputs): ``tau`` times the
    log-odds of each positive class, ``log(pi / (1 - pi))``. Training on ``logits + offset`` makes the
    raw logits estimate a balanced-prior classifier (Menon et al., ICLR 2021).

    Args:
        labels: ``(N,)`` class indices or ``(N, L)`` 0/1 labels, NaN = unknown.
        task: Task type.
        num_classes: Classes (or labels).
        tau: Strength; 1 is the paper's default.

    Returns:
        ``(outputs,)`` float32 offsets.
    """
    if labels.ndim == 2:
        known = (~np.isnan(labels)).sum(0).clip(min=1)
        pi = np.nansum(labels, axis=0) / known
    else:
        y = labels[~np.isnan(labels)].astype(np.int64)
        pi = np.bincount(y, minlength=num_classes) / max(len(y), 1)
    pi = np.clip(pi, 1e-6, 1 - 1e-6)
    if task == "binary":
        off = np.log(pi[1] / pi[0])[None]
    elif task == "multilabel":
        off = np.log(pi / (1 - pi))
    else:
        off = np.log(pi)
    return torch.tensor(tau * off, dtype=torch.float32)
