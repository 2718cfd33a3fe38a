"""Aggregation as pure functions over ``state_dict``\\s: FedAvg, FedBN's local keys, FedProx's term, FedAdam, FedAvgM.

Every tensor of a ``state_dict`` is handled on purpose, not only ``parameters()``: batch-norm running means and
variances are averaged like weights (averaging parameters alone would silently leave every client its own
statistics, which is FedBN), and the integer ``num_batches_tracked`` is averaged and rounded back to an integer.
FedBN names the batch-norm tensors (:func:`batchnorm_keys`) that never leave a client. FedAdam (Reddi et al., 2021)
steps the model's parameters with Adam on the pseudo-gradient ``mean(client) - global``; its statistics (buffers)
are plain averages. FedAvgM (Hsu et al., 2019) steps them with server momentum on the same pseudo-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedbn", "fedavgm")

#: The server learning rate of each strategy with a server optimiser, when none is given.
SERVER_LR = {"fedadam": 0.01, "fedavgm": 1.0}

State = dict[str, torch.Tensor]


def check_strategy(name: str) -> str:
    """``name`` in lower case if it is one of :data:`STRATEGIES`; else a one-line ConfigError."""
    from medclass.errors import ConfigError

    key = str(name).lower()
    if key not in STRATEGIES:
        raise ConfigError(f"--strategy {name}: unknown strategy (use {', '.join(STRATEGIES)})")
    return key


def batchnorm_keys(model: nn.Module) -> set[str]:
    """The ``state_dict`` keys of every batch-norm layer of ``model`` (affine weights, running stats, counter)."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            prefix = f"{name}." if name else ""
            keys.update(prefix + k for k in module.state_dict())
    return keys


def parameter_keys(model: nn.Module) -> set[str]:
    """The ``state_dict`` keys that are trained parameters (the rest are buffers)."""
    return {name for name, _ in model.named_parameters()}


def weighted_average(states: Sequence[State], weights: Sequence[float], keys: Sequence[str] | None = None) -> State:
    """The weighted mean of ``states`` key by key (float64 arithmetic, each tensor's dtype kept).

    Floating tensors get ``sum_i w_i x_i / sum_i w_i``; integer tensors (``num_batches_tracked``) the same mean
    rounded to the nearest integer.

    Args:
        states: ``K`` state dicts with the same keys and shapes.
        weights: ``K`` non-negative weights (example counts), not all zero.
        keys: The keys to average (default: all of the first state's).

    Returns:
        A new state dict of the averaged keys.
    """
    w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
    if len(states) != len(w) or not len(states) or float(w.sum()) <= 0:
        raise ValueError(f"weighted_average: {len(states)} states, weights {list(weights)}")
    w = w / w.sum()
    out: State = {}
    for key in keys if keys is not None else list(states[0]):
        stacked = torch.stack([s[key].detach().to(torch.float64) for s in states])
        mean = torch.tensordot(w, stacked, dims=1)
        ref = states[0][key]
        out[key] = (mean.round() if not ref.is_floating_point() else mean).to(ref.dtype)
    return out


def shared_keys(state: State, local: set[str] | frozenset) -> list[str]:
    """The keys sent between server and clients: all but the clients' ``local`` ones."""
    return [k for k in state if k not in local]


def proximal_term(model: nn.Module, anchor: State, mu: float) -> torch.Tensor:
    """FedProx's ``mu / 2 * sum ||w - w_global||^2`` over ``model``'s parameters (a scalar tensor)."""
    total = torch.zeros((), dtype=torch.float32)
    for name, p in model.named_parameters():
        total = total + (p.float() - anchor[name].to(p.device, torch.float32)).pow(2).sum()
    return 0.5 * mu * total


def add_proximal_gradient(model: nn.Module, anchor: State, mu: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Add FedProx's gradient ``mu * (w - w_global)`` to every parameter's gradient during ``backward``.

    This is the gradient of :func:`proximal_term`, added by tensor hooks so the ordinary training step
    (:func:`medclass.training.loop.train_one_epoch`) trains the FedProx objective unchanged.

    Returns:
        The hook handles; call ``remove()`` on each when the round's local training ends.
    """
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ref = anchor[name].detach().to(p.device, p.dtype)

        def hook(grad: torch.Tensor, _p: torch.Tensor = p, _ref: torch.Tensor = ref) -> torch.Tensor:
            return grad + mu * (_p.detach() - _ref)

        handles.append(p.register_hook(hook))
    return handles


@dataclass
class AdamState:
    """The server optimiser's state: FedAdam's moments ``m``, ``v`` (FedAvgM's velocity in ``m``) and the step count."""

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    step: int = 0
    m: State = field(default_factory=dict)
    v: State = field(default_factory=dict)

    def tensors(self) -> State:
        """``m.<key>`` and ``v.<key>`` for a checkpoint."""
        return {**{f"m.{k}": t for k, t in self.m.items()}, **{f"v.{k}": t for k, t in self.v.items()}}

    def load(self, tensors: State, step: int) -> None:
        """Restore the moments written by :meth:`tensors`."""
        self.m = {k[2:]: t for k, t in tensors.items() if k.startswith("m.")}
        self.v = {k[2:]: t for k, t in tensors.items() if k.startswith("v.")}
        self.step = step


def fedadam_step(global_state: State, average: State, params: set[str], opt: AdamState) -> State:
    """One FedAdam step: parameters move by Adam on ``delta = average - global``; buffers take ``average``.

    With ``m = b1 m + (1 - b1) delta``, ``v = b2 v + (1 - b2) delta^2`` (both starting at 0, no bias
    correction, as in Reddi et al.), ``w = w + lr * m / (sqrt(v) + tau)``. Updates ``opt`` in place.

    Args:
        global_state: The model before the round.
        average: :func:`weighted_average` of the clients' models.
        params: Keys that are parameters (:func:`parameter_keys`); other keys are statistics.
        opt: The server optimiser's state.
    """
    opt.step += 1

    def move(key: str, delta: torch.Tensor) -> torch.Tensor:
        m = opt.beta1 * opt.m.get(key, torch.zeros_like(delta)).double() + (1 - opt.beta1) * delta
        v = opt.beta2 * opt.v.get(key, torch.zeros_like(delta)).double() + (1 - opt.beta2) * delta * delta
        opt.m[key], opt.v[key] = m.float(), v.float()
        return opt.lr * m / (v.sqrt() + opt.tau)

    return _step_parameters(global_state, average, params, move)


def fedavgm_step(global_state: State, average: State, params: set[str], opt: AdamState, momentum: float) -> State:
    """One FedAvgM step: parameters move by momentum on ``delta = average - global``; buffers take ``average``.

    ``m = momentum * m + delta`` (``m`` starting at 0), ``w = w + lr * m``. With ``lr = 1`` and ``momentum = 0``
    this is FedAvg. Updates ``opt`` in place (``opt.m`` holds the velocity; ``opt.v`` is unused).

    Args:
        global_state: The model before the round.
        average: :func:`weighted_average` of the clients' models.
        params: Keys that are parameters (:func:`parameter_keys`); other keys are statistics.
        opt: The server optimiser's state (its ``lr`` is the server learning rate).
        momentum: The server momentum in ``[0, 1)``.
    """
    opt.step += 1

    def move(key: str, delta: torch.Tensor) -> torch.Tensor:
        m = momentum * opt.m.get(key, torch.zeros_like(delta)).double() + delta
        opt.m[key] = m.float()
        return opt.lr * m

    return _step_parameters(global_state, average, params, move)


def _step_parameters(
    global_state: State, average: State, params: set[str], move: Callable[[str, torch.Tensor], torch.Tensor]
) -> State:
    """A server optimiser's step: each parameter ``w`` becomes ``w + move(key, average - w)``; buffers ``average``.

    The arithmetic is float64; each tensor keeps its dtype. ``move`` gets the key and the float64 pseudo-gradient.
    """
    out: State = {}
    for key, w in global_state.items():
        if key not in params or key not in average:
            out[key] = average.get(key, w).clone()
            continue
        out[key] = (w.double() + move(key, average[key].double() - w.double())).to(w.dtype)
    return out
