"""Optimisers and per-step learning-rate schedules (linear warm-up, then cosine, step or constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from medclass.config import OptimConfig
from medclass.errors import ConfigError


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov); no weight decay on biases and norm parameters.

    Frozen parameters are left out; with ``cfg.layer_decay`` < 1 each layer's group gets
    ``lr * layer_decay ** (distance from the head)``.
    """
    if cfg.layer_decay < 1.0:
        from medclass.training.transfer import layer_decay_groups

        groups = [
            {
                "params": g["params"],
                "lr": cfg.lr * g["lr_scale"],
                "weight_decay": 0.0 if g["no_decay"] else cfg.weight_decay,
            }
            for g in layer_decay_groups(model, cfg.layer_decay)
        ]
    else:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = cfg.name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    raise ConfigError(f"optim.name: unknown optimiser '{cfg.name}' (use adamw, adam or sgd)")


def lr_factor(step: int, total: int, warmup: int, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    schedule = cfg.schedule.lower()
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "multistep":
        return 0.1 ** sum(step >= m * total for m in cfg.milestones)
    raise ConfigError(f"optim.schedule: unknown schedule '{cfg.schedule}' (use cosine, multistep or constant)")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` implementing :func:`lr_factor`."""
    total = steps_per_epoch * epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg))


class EMA:
    """Exponential moving average of a model's parameters and buffers, evaluated instead of the raw weights.

    Args:
        model: The model being trained.
        decay: Per-step decay (e.g. 0.999); the effective decay ramps up over the first steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)
