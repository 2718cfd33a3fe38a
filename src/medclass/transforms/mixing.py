"""Mixing augmentations for whole batches: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019).

Both pair every sample with another one of the same batch (a permutation drawn from the generator)
and blend images and targets with one ratio per batch, drawn from ``Beta(alpha, alpha)``. Targets
become soft: class probabilities for multi-class tasks (each row sums to 1), fractions for binary
and multi-label tasks (an unknown label stays NaN and is masked out of the loss). 2D and 3D alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(labels: torch.Tensor, task: str, num_classes: int) -> torch.Tensor:
    """Labels as float targets that can be blended.

    Args:
        labels: ``(B,)`` class indices or ``(B, L)`` 0/1, NaN = unknown.
        task: Task type.
        num_classes: Classes of a multi-class (or ordinal) task.

    Returns:
        ``(B, K)`` one-hot rows for multi-class (an unknown label gives a zero row, which adds no
        loss), else the labels as float (NaN kept).
    """
    if task in ("binary", "multilabel"):
        return labels.float()
    known = ~torch.isnan(labels)
    out = torch.zeros(labels.shape[0], num_classes)
    out[known] = F.one_hot(labels[known].long(), num_classes).float()
    return out


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One draw from ``Beta(alpha, alpha)``, reproducible from the torch generator."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _blend(t: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * t + (1 - lam) * t[perm]


def mixup(
    x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, *, alpha: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each sample with a partner: ``lam * a + (1 - lam) * b`` for images and targets.

    Args:
        x: ``(B, C, *spatial)`` float images.
        targets: ``(B,)`` or ``(B, K)`` float targets from :func:`soft_targets`.
        generator: Source of randomness.
        alpha: Beta distribution parameter.

    Returns:
        Mixed images (same shape) and mixed targets (same shape).
    """
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator)
    return _blend(x, perm, lam), _blend(targets, perm, lam)


def cutmix(
    x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, *, alpha: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box from each sample's partner; targets mix by the share of pixels kept.

    The box covers about ``1 - lam`` of the image (a side of ``(1 - lam)^(1/d)`` of each of the ``d``
    spatial axes), centred at a random point and clipped at the border; the target ratio uses the
    clipped box's true share.

    Args:
        x: ``(B, C, *spatial)`` float images.
        targets: ``(B,)`` or ``(B, K)`` float targets from :func:`soft_targets`.
        generator: Source of randomness.
        alpha: Beta distribution parameter.

    Returns:
        Mixed images and targets (shapes unchanged).
    """
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator)
    spatial = x.shape[2:]
    frac = (1 - lam) ** (1 / len(spatial))
    box = []
    for n in spatial:
        side = int(round(n * frac))
        centre = int(torch.randint(0, n, (1,), generator=generator))
        lo, hi = max(centre - side // 2, 0), min(centre - side // 2 + side, n)
        box.append(slice(lo, hi))
    out = x.clone()
    region = (slice(None), slice(None), *box)
    out[region] = x[perm][region]
    pasted = float(np.prod([s.stop - s.start for s in box])) / float(np.prod(spatial))
    return out, _blend(targets, perm, 1 - pasted)


class Mixer:
    """Mixup and/or cutmix for a training batch; with both, one of the two per batch (even odds).

    Args:
        task: Task type.
        num_classes: Classes (multi-class) or outputs.
        mixup_alpha: Mixup's Beta parameter; 0 turns it off.
        cutmix_alpha: Cutmix's Beta parameter; 0 turns it off.
    """

    def __init__(self, task: str, num_classes: int, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        self.task, self.num_classes = task, num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha

    def __bool__(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = soft_targets(labels, self.task, self.num_classes)
        use_cut = bool(self.cutmix_alpha) and (not self.mixup_alpha or bool(torch.rand(1, generator=generator) < 0.5))
        if use_cut:
            return cutmix(x, targets, generator, alpha=self.cutmix_alpha)
        return mixup(x, targets, generator, alpha=self.mixup_alpha)
