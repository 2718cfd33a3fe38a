"""Task semantics in one place: head size, loss and logits-to-probabilities for each task type.

* ``binary``: one logit, sigmoid; probabilities are reported as ``(N, 2)`` = ``[1 - p, p]``.
* ``multiclass`` and ``ordinal``: K logits, softmax (ordinal is trained as multi-class).
* ``multilabel``: L logits, independent sigmoids; NaN labels are masked out of the loss.
"""

from __future__ import annotations

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
) -> torch.Tensor:
    """Mean loss over known labels.

    Args:
        logits: ``(B, outputs)``.
        labels: ``(B,)`` class indices or ``(B, L)`` 0/1, NaN = unknown (masked out); soft labels
            ``(B, K)`` for multi-class (mixing augmentations) are accepted too.
        task: Task type.
        label_smoothing: Mix targets with the uniform distribution (0.5 for sigmoid outputs).
        class_weights: ``(K,)`` per-class weights (binary: ``[w_neg, w_pos]``; multilabel: per-label positive weight).

    Returns:
        Scalar loss (0 with a gradient when every label in the batch is unknown).
    """
    logits = logits.float()
    if task == "multilabel" or task == "binary":
        target = labels.float().reshape(logits.shape)
        known = ~torch.isnan(target)
        target = torch.nan_to_num(target, nan=0.0)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        weight = known.float()
        if class_weights is not None:
            if task == "binary":
                weight = weight * torch.where(target > 0.5, class_weights[1], class_weights[0])
            else:
                weight = weight * torch.where(target > 0.5, class_weights, torch.ones_like(class_weights))
        return (loss * weight).sum() / known.sum().clamp(min=1)
    if labels.ndim == 2:  # soft targets
        logp = F.log_softmax(logits, dim=1)
        return -(labels * logp).sum(dim=1).mean()
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known].long(), weight=class_weights, label_smoothing=label_smoothing)
