"""Deep ensembles and Monte Carlo dropout as one module that outputs the logits of averaged probabilities.

:class:`ProbabilityAverage` runs every member (each with its own stored calibration) and, with
``mc_samples > 0``, each member that many times with its dropout layers active (Gal and
Ghahramani 2016), averages the probabilities (Lakshminarayanan et al. 2017), and returns them as
logits (``logit(p)`` for sigmoid tasks, ``log p`` for softmax tasks). Everything downstream
(thresholds, calibration, conformal sets, metrics) then works on it as on one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medclass.errors import ModelError
from medclass.tasks import logits_to_probs
from medclass.trust.scaling import apply_calibration

_EPS = 1e-6


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` has a dropout layer with a non-zero rate."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def probs_to_logits(probs: torch.Tensor, task: str) -> torch.Tensor:
    """Inverse of :func:`medclass.tasks.logits_to_probs`: ``(N, K)`` probabilities -> ``(N, outputs)`` logits."""
    p = probs.clamp(_EPS, 1 - _EPS)
    if task == "binary":
        return torch.log(p[:, 1:] / (1 - p[:, 1:]))
    if task == "multilabel":
        return torch.log(p / (1 - p))
    return torch.log(p)


class ProbabilityAverage(nn.Module):
    """Average the calibrated probabilities of several models (and of MC-dropout samples of each).

    Args:
        members: The trained networks.
        calibrations: Each member's stored calibration (``None`` for none).
        task: The shared task.
        mc_samples: Forward passes per member with dropout active (0 = deterministic, one pass).
        seed: Seed of the dropout masks, so predictions repeat exactly.

    Shapes:
        ``(B, C, ...)`` -> ``(B, outputs)`` logits of the mean probabilities.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        calibrations: Sequence[dict[str, Any] | None],
        task: str,
        *,
        mc_samples: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one model")
        if mc_samples and not all(has_dropout(m) for m in members):
            raise ModelError("MC dropout needs models with dropout (train with model.drop_rate > 0)")
        self.members = nn.ModuleList(members)
        self.calibrations = list(calibrations)
        self.task = task
        self.mc_samples = mc_samples
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = []
        for model, cal in zip(self.members, self.calibrations, strict=True):
            if not self.mc_samples:
                probs.append(logits_to_probs(apply_calibration(model(x).float(), cal), self.task))
                continue
            dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                for m in dropouts:
                    m.train()
                try:
                    for _ in range(self.mc_samples):
                        probs.append(logits_to_probs(apply_calibration(model(x).float(), cal), self.task))
                finally:
                    for m in dropouts:
                        m.eval()
        return probs_to_logits(torch.stack(probs).mean(0), self.task)
