"""A hospital's side: its own data, local training with medclass's loop, evaluation; no Flower here.

A client knows only its :class:`ClientSource` (a data spec, optionally one share of a partition of it). Everything
else (model, recipe, batch size, learning rate, strategy) comes from the server in a *plan*: a flat dict that
travels in each message's ``ConfigRecord`` (:data:`PLAN_KEYS`), so every client trains the same network. The
Flower wiring is :mod:`medclass.federated.apps`.

With differential privacy in the plan (``dp_epsilon`` > 0), the network's BatchNorm layers become GroupNorm
(``"norm": "group"`` in its architecture) and each round trains with DP-SGD (:func:`local_train_private`, on
:mod:`medclass.federated.privacy`) instead of the recipe's loop.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.errors import DataError

log = logging.getLogger(__name__)

#: What the server decides for every client (the ``plan``).
PLAN_KEYS = (
    "model",
    "recipe",
    "batch_size",
    "lr",
    "seed",
    "strategy",
    "mu",
    "local_epochs",
    "rounds",
    "image_size",
    "dp_epsilon",
    "dp_delta",
    "dp_clip",
    "settings",
)
#: Plan keys a client's loaded data and model depend on.
SITE_KEYS = ("model", "recipe", "batch_size", "lr", "seed", "dp_epsilon", "settings")
#: Keys of ``model.json`` that must agree between a client and the federation.
AGREE_KEYS = ("task", "label_names", "architecture", "preprocessing")


@dataclass(frozen=True)
class ClientSource:
    """Where a client's data comes from: a spec, and optionally share ``index`` of ``clients`` of a partition.

    Attributes:
        spec: Catalog name, ``.npz``, folder or CSV manifest (as ``medclass train --data``).
        partition: ``None`` (all of ``spec`` is this client's), or a scheme of
            :func:`medclass.federated.partition.parse_partition` that this client takes share ``index`` of.
        clients: Number of shares.
        index: This client's share (and its seed offset).
        seed: Seed of the partition.
    """

    spec: str
    partition: str | None = None
    clients: int = 1
    index: int = 0
    seed: int = 0

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Site:
    """A client's loaded state: configuration, data and the checkpoint metadata of the federation's model."""

    cfg: Any
    dataset: Any
    meta: dict[str, Any]
    source: ClientSource

    @property
    def prep(self) -> dict[str, Any]:
        return self.meta["preprocessing"]


_SITES: dict[str, Site] = {}


def plan_overrides(plan: dict[str, Any], spec: str, *, tabular: list[str] | None = None) -> dict[str, Any]:
    """The nested configuration overrides (as :func:`medclass.api.overrides_from` makes them) a plan means.

    ``0`` and ``""`` in a plan mean "not given" (Flower's records hold no ``None``): the recipe's value stays. The
    plan's ``settings`` (a JSON object of dotted keys, :attr:`ServerSettings.settings`) are applied last: they win.
    """
    from medclass.config_overrides import NULL, put_dotted

    model = plan.get("model") or None
    out: dict[str, Any] = {
        "data": {"spec": spec},
        "model": {"name": model, "members": [] if model else None},
        # the server averages: a client-side moving average would lag the global model
        "train": {"ema": 0.0, "precision": "fp32", "device": "cpu"},
    }
    for section, key, value in (
        ("train", "batch_size", plan.get("batch_size")),
        ("train", "seed", plan.get("seed")),
        ("optim", "lr", plan.get("lr")),
        ("data", "image_size", plan.get("image_size")),
        ("data", "tabular", tabular),
    ):
        if value or (key == "seed" and value is not None):
            out.setdefault(section, {})[key] = value
    for dotted, value in json.loads(plan.get("settings") or "{}").items():
        put_dotted(out, dotted, NULL if value is None else value)
    return out


def load_site(source: ClientSource, plan: dict[str, Any]) -> Site:
    """The client's data and configuration for ``plan`` (cached per process: a client loads its data once)."""
    key = source.key() + json.dumps({k: plan.get(k) for k in SITE_KEYS})
    if key in _SITES:
        return _SITES[key]
    from medclass.federated import partition as part
    from medclass.training.loop import model_meta
    from medclass.training.run import resolve_run

    spec = part.parse_partition(source.partition) if source.partition else None
    tabular = [spec.column] if spec is not None and spec.column else None
    recipe = plan.get("recipe") or "default"
    cfg, dataset = resolve_run(recipe=recipe, overrides=plan_overrides(plan, source.spec, tabular=tabular))
    if spec is not None:
        labels, groups, sites, _ = part.all_rows(dataset)
        assignment = part.assign_clients(
            labels, source.clients, spec, seed=source.seed, groups=groups, sites=sites if tabular else None
        )
        shift = part.shift_params(source.index, source.seed) if spec.kind == "shift" else None
        dataset = part.client_dataset(dataset, assignment, source.index, shift=shift)
        cfg = replace(cfg, data=replace(cfg.data, tabular=[]))
    if len(dataset.splits["train"]) < 2:
        raise DataError(f"{source.spec}: client {source.index} has {len(dataset.splits['train'])} training images")
    torch.set_num_threads(max(1, int(cfg.train.threads or 1)))  # clients share the machine in a simulation
    meta = model_meta(cfg, dataset)
    if privacy_config(plan) is not None:
        meta["architecture"] = _private_architecture(meta["architecture"], source.spec)
    site = Site(cfg, dataset, meta, source)
    _SITES[key] = site
    return site


def privacy_config(plan: dict[str, Any]) -> Any:
    """The plan's :class:`~medclass.federated.privacy.PrivacyConfig`, or ``None`` when ``dp_epsilon`` is 0.

    The expected DP batch is the plan's batch size and the round-1 learning rate its ``lr`` (the recipe's 256 and
    1.0 when not given); the noise is never seeded from the plan, which the server knows.
    """
    if not float(plan.get("dp_epsilon") or 0.0):
        return None
    from medclass.federated.privacy import PrivacyConfig

    default = PrivacyConfig()
    return PrivacyConfig(
        target_epsilon=float(plan["dp_epsilon"]),
        delta=float(plan.get("dp_delta") or default.delta),
        max_grad_norm=float(plan.get("dp_clip") or default.max_grad_norm),
        batch_size=int(plan.get("batch_size") or default.batch_size),
        lr=float(plan.get("lr") or default.lr),
    )


def _private_architecture(arch: dict[str, Any], where: str) -> dict[str, Any]:
    """``arch`` with GroupNorm for BatchNorm, checked by Opacus; a one-line error for what DP-SGD cannot train."""
    from medclass.errors import ConfigError
    from medclass.federated.privacy import make_private_compatible
    from medclass.models import build_model

    if arch.get("fusion"):
        raise ConfigError(f"{where}: differential privacy trains image models only, not fusion with clinical fields")
    arch = {**arch, "norm": "group"}
    make_private_compatible(build_model(arch))
    return arch


def describe(site: Site) -> dict[str, Any]:
    """What the server checks and builds the global model from: the model metadata and the split sizes."""
    meta = {k: site.meta[k] for k in site.meta if k != "dataset"}
    return {"meta": meta, "sizes": {k: len(s) for k, s in site.dataset.splits.items()}}


def check_agrees(mine: dict[str, Any], federation: dict[str, Any], where: str) -> None:
    """A one-line DataError when a client's model metadata differs from the federation's (labels, channels...)."""
    for key in AGREE_KEYS:
        a, b = mine.get(key), federation.get(key)
        if key == "preprocessing":
            a, b = ({k: d.get(k) for k in ("channels", "input_shape")} for d in (a or {}, b or {}))
        if a != b:
            raise DataError(f"{where}: its data's {key} {_short(a)} differ from the federation's {_short(b)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def round_lr(base: float, round_index: int, rounds: int) -> float:
    """The learning rate of round ``round_index`` (1-based): a cosine from ``base`` to ``base / 20`` over the rounds."""
    progress = (round_index - 1) / max(rounds, 1)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_network(site: Site) -> nn.Module:
    """An untrained network of the federation's architecture."""
    from medclass.models import build_model

    return build_model(site.meta["architecture"])


def local_train(
    site: Site,
    model: nn.Module,
    *,
    epochs: int,
    lr: float,
    mu: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` (in place) on the client's training split for ``epochs`` passes.

    Uses :func:`medclass.training.loop.train_one_epoch` with the recipe's optimiser, loss and augmentation at a
    constant learning rate ``lr`` (the server's schedule sets it per round). With ``mu > 0`` (FedProx), the
    gradient of ``mu / 2 ||w - w_start||^2`` is added to every step.

    Args:
        site: The client.
        model: The network, holding the weights to start from.
        epochs: Local passes over the training split.
        lr: Learning rate of the round.
        mu: FedProx's proximal weight; 0 for the other strategies.
        seed: Seed of the shuffle and augmentation of this round.

    Returns:
        ``{"train_loss", "n"}``.
    """
    from medclass.federated.aggregate import add_proximal_gradient
    from medclass.training.loop import train_one_epoch
    from medclass.training.losses import loss_options
    from medclass.training.optim import build_optimizer, build_scheduler
    from medclass.transforms import build_augment
    from medclass.transforms.mixing import Mixer

    cfg, ds = site.cfg, site.dataset
    optim_cfg = replace(cfg.optim, lr=lr, schedule="constant", warmup_epochs=0.0)
    train = ds.splits["train"]
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, steps_per_epoch=1, epochs=1)
    a = cfg.augment
    mixer = Mixer(ds.task, ds.num_classes, mixup_alpha=a.mixup, cutmix_alpha=a.cutmix) if a.enabled else None
    handles = add_proximal_gradient(model, {k: v.clone() for k, v in model.state_dict().items()}, mu) if mu else []
    losses = []
    try:
        for _ in range(epochs):
            losses.append(
                train_one_epoch(
                    model,
                    train,
                    task=ds.task,
                    prep=site.prep,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    batch_size=cfg.train.batch_size,
                    generator=generator,
                    augment=build_augment(a),
                    loss_kwargs=loss_options(cfg, train, ds.task, ds.num_classes),
                    grad_clip=cfg.optim.grad_clip,
                    balanced=cfg.train.sampler == "balanced",
                    mixer=mixer,
                )
            )
    finally:
        for h in handles:
            h.remove()
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "n": len(train)}


def local_train_private(
    site: Site,
    model: nn.Module,
    *,
    config: Any,
    rounds: int,
    round_index: int,
    epochs: int,
    lr: float,
    state: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round ``round_index`` (1-based) of ``rounds`` of DP-SGD on the client's training split, ``model`` in place.

    The learning rate is the DP recipe's: one cosine from ``lr`` to 0 over the rounds
    (:func:`medclass.federated.privacy.round_lr`); no augmentation, no class weights (per-row losses only).

    Args:
        site: The client.
        model: The DP-compatible network (GroupNorm) holding the global weights.
        config: The :class:`~medclass.federated.privacy.PrivacyConfig` of the federation.
        rounds: Rounds of the federation (the budget is spread over all of them).
        round_index: This round.
        epochs: Local passes this round.
        lr: Learning rate of round 1.
        state: The client's accountant state after its previous round (``None`` before its first).

    Returns:
        ``(report, state)``: ``{"train_loss", "n", "lr", "epsilon", "delta", "steps", ...}`` and the new accountant
        state.
    """
    from medclass.federated import privacy

    rate = privacy.round_lr(replace(config, lr=lr), round_index - 1, rounds)
    report, state = privacy.private_round(
        model,
        site.dataset.splits["train"],
        task=site.dataset.task,
        prep=site.prep,
        config=config,
        rounds=rounds,
        local_epochs=epochs,
        lr=rate,
        state=state,
    )
    return {**report, "lr": rate}, state


def local_evaluate(site: Site, model: nn.Module, split: str) -> dict[str, float]:
    """``{"auc", "acc", "bacc", "loss", "n"}`` of ``model`` on the client's ``split`` (NaN where undefined).

    ``bacc`` is the balanced accuracy (mean recall over the classes present) of the argmax, or of P(1) > 0.5 for a
    binary task; NaN for multi-label tasks.
    """
    import warnings

    from medclass.inference import predict_logits
    from medclass.metrics import medmnist
    from medclass.tasks import logits_to_probs, task_loss

    s = site.dataset.splits[split]
    if not len(s):
        return {"auc": float("nan"), "acc": float("nan"), "bacc": float("nan"), "loss": float("nan"), "n": 0}
    logits = predict_logits(model, s.images, site.prep, site.cfg.train.eval_batch_size)
    probs = logits_to_probs(logits, site.dataset.task).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class only on a small client: NaN, reported as such
        return {
            "auc": float(medmnist.auc(s.labels, probs, site.dataset.task)),
            "acc": float(medmnist.acc(s.labels, probs, site.dataset.task)),
            "bacc": _balanced_accuracy(s.labels, probs, site.dataset.task),
            "loss": float(task_loss(logits, torch.from_numpy(s.labels), site.dataset.task)),
            "n": len(s),
        }


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray, task: str) -> float:
    """Balanced accuracy of ``probs`` ``(N, K)`` against class indices ``labels`` ``(N,)`` or ``(N, 1)``."""
    from medclass.metrics.classification import balanced_accuracy
    from medclass.metrics.positive import binary_decision

    if task == "multilabel":
        return float("nan")
    # the decision rule of MedMNIST's ACC (medmnist.acc): P(1) strictly above 0.5, or the argmax
    predicted = binary_decision(probs, 0.5, inclusive=False) if task == "binary" else probs.argmax(1)
    return float(balanced_accuracy(np.asarray(labels).reshape(-1), predicted, num_classes=probs.shape[1]))


def local_baseline(
    site: Site, *, rounds: int, local_epochs: int, lr: float, seed: int, privacy: Any = None
) -> dict[str, Any]:
    """The client's local-only model: the same schedule as the federation on its own data; its val and test metrics.

    The model of the round with the best validation AUC is the one tested (as ``medclass train`` selects). With
    ``privacy`` (a :class:`~medclass.federated.privacy.PrivacyConfig`) it trains with DP-SGD at the same budget, on
    an accountant of its own: the comparison a hospital weighing "alone" against "federated" needs.
    """
    torch.manual_seed(seed)
    model = build_network(site)
    best, best_state = -math.inf, None
    state = None
    for r in range(1, rounds + 1):
        if privacy is None:
            local_train(site, model, epochs=local_epochs, lr=round_lr(lr, r, rounds), seed=seed * 7919 + r)
        else:
            _, state = local_train_private(
                site, model, config=privacy, rounds=rounds, round_index=r, epochs=local_epochs, lr=lr, state=state
            )
        val = local_evaluate(site, model, "val")["auc"]
        score = val if np.isfinite(val) else -math.inf
        if best_state is None or score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"val": local_evaluate(site, model, "val"), "test": local_evaluate(site, model, "test")}
