"""Tests of explanations: do they depend on what the model learnt, and do they point at what it uses?

* Model-parameter randomisation (Adebayo et al. 2018): maps of the trained model against maps of
  the same architecture with re-initialised weights. A faithful method gives different maps
  (low Spearman rank correlation); a method that mostly shows edges of the input does not.
* Deletion and insertion curves (Petsiuk et al. 2018): the target class's probability as the
  pixels a map ranks highest are removed (replaced by the darkest value) or, from an empty image,
  restored. A useful map makes the deletion curve fall fast (low area) and the insertion curve
  rise fast (high area); both are compared with random maps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medclass.explain.methods import ClassScores, saliency

RANDOMISATION_LIMIT = 0.5  # Spearman correlation at or above this fails the randomisation check


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters re-initialised (the cascading test's last step)."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in twin.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    return twin.eval()


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps ``(B, ...)`` (0 where a map is constant)."""
    from scipy.stats import rankdata

    fa = rankdata(a.reshape(len(a), -1), axis=1)
    fb = rankdata(b.reshape(len(b), -1), axis=1)
    fa -= fa.mean(1, keepdims=True)
    fb -= fb.mean(1, keepdims=True)
    denom = np.sqrt((fa**2).sum(1) * (fb**2).sum(1))
    return np.where(denom > 0, (fa * fb).sum(1) / np.maximum(denom, 1e-12), 0.0)


def randomisation_check(
    model: nn.Module, task: str, x: torch.Tensor, targets: Sequence[int], method: str, *, seed: int = 0
) -> dict[str, object]:
    """Spearman correlation per image between the trained and the randomised model's maps.

    Returns:
        ``{"spearman": (B,) array, "mean": float, "passed": bool}`` (passed: mean below
        :data:`RANDOMISATION_LIMIT`).
    """
    trained = saliency(model, task, x, targets, method)
    random = saliency(randomised_copy(model, seed), task, x, targets, method)
    rho = spearman(trained, random)
    mean = float(np.mean(rho))
    return {"spearman": rho, "mean": mean, "passed": bool(mean < RANDOMISATION_LIMIT)}


def _target_probs(model: nn.Module, task: str, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    scores = ClassScores(model, task)(x)
    probs = torch.softmax(scores, 1) if task in ("multiclass", "ordinal") else torch.sigmoid(scores)
    return probs.gather(1, targets.view(-1, 1))[:, 0].numpy()


@torch.no_grad()
def deletion_insertion(
    model: nn.Module, task: str, x: torch.Tensor, targets: Sequence[int], maps: np.ndarray, *, steps: int = 20
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves and their areas, per image.

    Args:
        model: The network.
        task: Task type.
        x: Normalised input ``(B, C, ...)``.
        targets: Class index per image.
        maps: ``(B, *spatial)`` saliency maps (higher = more important).
        steps: Curve points after the start (each removes or restores ``1 / steps`` of the pixels).

    Returns:
        ``{"deletion": (B, steps + 1), "insertion": (B, steps + 1), "deletion_auc": (B,), "insertion_auc": (B,)}``.
    """
    model.eval()
    b = x.shape[0]
    n = int(np.prod(maps.shape[1:]))
    order = np.argsort(-maps.reshape(b, n), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(b, 0), axis=1)
    rank_t = torch.from_numpy(rank).view(b, 1, *x.shape[2:])
    baseline = torch.full_like(x, float(x.min()))
    t = torch.as_tensor([int(v) for v in targets])
    deletion, insertion = [], []
    for k in range(steps + 1):
        top = rank_t < round(n * k / steps)  # the k/steps most important pixels
        deletion.append(_target_probs(model, task, torch.where(top, baseline, x), t))
        insertion.append(_target_probs(model, task, torch.where(top, x, baseline), t))
    d, i = np.stack(deletion, 1), np.stack(insertion, 1)
    return {"deletion": d, "insertion": i, "deletion_auc": d.mean(1), "insertion_auc": i.mean(1)}


def random_maps(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform random maps: the baseline a saliency method must beat."""
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)
