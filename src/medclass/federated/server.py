"""The server's side: the rounds, written out as a loop over Flower's ``Grid`` (Message API); no data path anywhere.

Each round sends the global ``state_dict`` (every tensor, batch-norm buffers included) in an ``ArrayRecord`` with the
plan in a ``ConfigRecord`` to the connected clients, waits for their replies, aggregates the models of those that
answered (:mod:`medclass.federated.aggregate`) and saves a checkpoint of the finished round (``state.safetensors`` /
``state.json`` in the run folder), from which ``--resume`` continues. A client that fails or times out is left out
of that round; the round counts if at least ``min_clients`` answered, and is retried otherwise. Messages carry
parameters, counts and metrics only: each client evaluates the model it receives on its own validation and test
split before it trains, and reports the numbers.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.federated.aggregate import (
    SERVER_LR,
    AdamState,
    check_strategy,
    fedadam_step,
    fedavgm_step,
    parameter_keys,
    weighted_average,
)

log = logging.getLogger(__name__)

#: Message actions (``config["action"]``) of the ``query`` message type.
DESCRIBE, JOIN, FINAL = "describe", "join", "final"
#: Each client's figures in ``metrics.json`` (``bacc``: balanced accuracy).
FIGURES = ("auc", "acc", "bacc")


@dataclass
class ServerSettings:
    """What the server decides. Everything but ``out``, ``resume``, ``timeout`` and ``min_clients`` goes to clients.

    Attributes:
        out: The run folder.
        rounds: Rounds of federated training.
        strategy: ``fedavg``, ``fedprox``, ``fedadam``, ``fedbn`` or ``fedavgm``.
        local_epochs: Passes over its training split each client makes per round.
        lr: Clients' learning rate at round 1 (cosine to 1/20 of it by the last round); ``None``: the recipe's.
        mu: FedProx's proximal weight.
        server_lr: The server learning rate of ``fedadam`` and ``fedavgm``; ``None``: the strategy's own
            (:data:`~medclass.federated.aggregate.SERVER_LR`).
        server_momentum: FedAvgM's server momentum.
        min_clients: Clients that must answer for a round to count (and connect before it starts).
        seed: Seed of the initial model and of every client's shuffle.
        model: Architecture (registry name); ``None``: the recipe's.
        recipe: The recipe every client builds its configuration from.
        batch_size: Clients' batch size; ``None``: the recipe's.
        image_size: Resize every client's images to this side; ``None``: native.
        baseline: Ask every client for its local-only baseline at the end.
        resume: Continue from the last completed round saved in ``out``.
        timeout: Seconds to wait for the replies of one round.
        expected_clients: Clients to wait for before the federation starts (at least ``min_clients``).
        dp_epsilon: Differential privacy: the epsilon each client may spend over the whole federation (DP-SGD,
            :mod:`medclass.federated.privacy`); 0 trains without it.
        dp_delta: Delta of each client's (epsilon, delta) guarantee.
        dp_clip: Each training row's gradient is clipped to this L2 norm.
        init_from: A medclass run folder (or its ``model.safetensors``) the global model starts from, e.g. one
            trained on public data: every tensor that fits is copied (:func:`medclass.training.transfer.load_matching`;
            the head of another task is not). The server reads it; the clients receive it as round 1's weights.
        settings: Configuration keys every client sets over the recipe, dotted (``{"optim.logit_adjust": 1.0}``,
            what ``--set`` gives); values must be JSON (they travel in the plan). Unknown keys and wrong types fail
            on the client with the configuration's one-line error.
    """

    out: str
    rounds: int = 5
    strategy: str = "fedavg"
    local_epochs: int = 1
    lr: float | None = None
    mu: float = 0.01
    server_lr: float | None = None
    server_momentum: float = 0.9
    min_clients: int = 2
    seed: int = 0
    model: str | None = None
    recipe: str = "default"
    batch_size: int | None = None
    image_size: int | None = None
    baseline: bool = True
    resume: bool = False
    timeout: float = 600.0
    expected_clients: int = 0
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    init_from: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The strategy in lower case, or a one-line ConfigError; at least one round of one local epoch; valid DP."""
        from medclass.errors import ConfigError

        self.strategy = check_strategy(self.strategy)
        if self.server_lr is None:
            self.server_lr = SERVER_LR.get(self.strategy, 1.0)
        if self.server_lr <= 0 or not 0 <= self.server_momentum < 1:
            raise ConfigError(
                f"server optimiser: need server_lr > 0 and 0 <= server_momentum < 1, got {self.server_lr} and "
                f"{self.server_momentum}"
            )
        for name in ("rounds", "local_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: need at least 1, got {getattr(self, name)}")
        if self.init_from and not Path(self.init_from).exists():
            raise ConfigError(f"{self.init_from}: --init-from names no run folder or weights file")
        bad = [k for k in self.settings if "." not in k]
        if bad:
            raise ConfigError(f"settings: '{bad[0]}' is not a dotted key (section.key, e.g. optim.logit_adjust)")
        try:
            json.dumps(self.settings)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"settings: values must be JSON (numbers, strings, lists...): {err}") from None
        if self.dp_epsilon < 0:
            raise ConfigError(f"dp_epsilon: need > 0 (or 0 for no differential privacy), got {self.dp_epsilon}")
        if self.dp_epsilon:
            from medclass.federated.client import privacy_config

            if self.strategy in ("fedprox", "fedbn"):
                raise ConfigError(
                    f"strategy {self.strategy} with differential privacy: use fedavg, fedadam or fedavgm (DP models "
                    "have GroupNorm, no batch statistics to keep local, and DP-SGD takes no proximal term)"
                )
            privacy_config(self.plan())  # checks delta and the clip norm

    def plan(self) -> dict[str, Any]:
        """The ``ConfigRecord`` values every client trains by (no ``None``: Flower records hold none)."""
        plan = {
            "model": self.model or "",
            "recipe": self.recipe,
            "batch_size": self.batch_size or 0,
            "lr": float(self.lr or 0.0),
            "seed": self.seed,
            "strategy": self.strategy,
            "mu": float(self.mu if self.strategy == "fedprox" else 0.0),
            "local_epochs": self.local_epochs,
            "rounds": self.rounds,
            "image_size": self.image_size or 0,
            "dp_epsilon": float(self.dp_epsilon),
            "dp_delta": float(self.dp_delta),
            "dp_clip": float(self.dp_clip),
            "settings": json.dumps(self.settings, sort_keys=True) if self.settings else "",
        }
        return plan

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _records() -> Any:
    from flwr import app

    return app


def wait_for_nodes(grid: Any, n: int, timeout: float, exclude: set[int] = frozenset()) -> list[int]:
    """The connected node IDs once at least ``n`` (not in ``exclude``) are there, or all there are at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(set(grid.get_node_ids()) - set(exclude))
        if len(nodes) >= n or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def _send(grid: Any, nodes: Iterable[int], kind: str, config: dict[str, Any], state: Any, timeout: float) -> list:
    """One message per node (the same content), the replies that came back in ``timeout``."""
    a = _records()
    content = {"config": a.ConfigRecord(config)}
    if state is not None:
        content["arrays"] = a.ArrayRecord(state)
    messages = [
        a.Message(a.RecordDict(content), message_type=kind, dst_node_id=node, group_id=str(config.get("round", "")))
        for node in nodes
    ]
    return list(grid.send_and_receive(messages, timeout=timeout)) if messages else []


def _ok(replies: list, what: str) -> list:
    """Replies without error; each error is one warning line naming the node."""
    good = []
    for msg in replies:
        if msg.has_error():
            text = str(msg.error.reason).strip()
            found = re.search(r"<class '[\w.]+'>:<'(.*)'>", text, re.S)  # the runtime's wrapping of an exception
            reason = (found.group(1) if found else text).strip().splitlines()
            log.warning("%s: client node %s left out: %s", what, msg.metadata.src_node_id, reason[-1] if reason else "")
        else:
            good.append(msg)
    return good


def _metrics(msg: Any) -> dict[str, Any]:
    rec = msg.content["metrics"]
    return {k: rec[k] for k in rec}


def describe_federation(grid: Any, settings: ServerSettings, exclude: set[int]) -> tuple[dict[str, Any], set[int]]:
    """Agree on the model: every client describes its data; the most common description is the federation's.

    Clients are then told the federation's description; one that differs answers with an error (its one-line
    reason is logged) and is left out of every later round.

    Returns:
        ``(meta, excluded node IDs)``.
    """
    from medclass.errors import DataError

    a = _records()
    nodes = wait_for_nodes(grid, max(settings.min_clients, settings.expected_clients), settings.timeout, exclude)
    replies = _ok(_send(grid, nodes, a.MessageType.QUERY, {"action": DESCRIBE, **settings.plan()}, None, 600), "join")
    if not replies:
        raise DataError("no client described its data: check the clients' logs")
    metas = {m.metadata.src_node_id: json.loads(m.content["config"]["describe"])["meta"] for m in replies}
    texts = [json.dumps(v, sort_keys=True) for v in metas.values()]
    votes = sorted(set(texts), key=lambda t: (-texts.count(t), texts.index(t)))  # most common, then first seen
    meta = json.loads(votes[0])
    join = {"action": JOIN, "federation": json.dumps(meta, sort_keys=True), **settings.plan()}
    joined = _ok(_send(grid, sorted(metas), a.MessageType.QUERY, join, None, 600), "join")
    ok = {m.metadata.src_node_id for m in joined}
    excluded = set(exclude) | (set(nodes) - ok)
    log.info("federation: %d clients joined, %d left out", len(ok), len(excluded - set(exclude)))
    return meta, excluded


def _initial_state(
    meta: dict[str, Any], seed: int, init_from: str | None = None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The federation's first global model: seeded, then the tensors of ``init_from`` that fit."""
    from medclass.models import build_model

    torch.manual_seed(seed)
    model = build_model(meta["architecture"])
    if init_from:
        from medclass.training.transfer import start_from

        start_from(model, init_from, what="global model initialised")
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _history_row(round_index: int, evals: list[dict[str, Any]], train: list[dict[str, Any]], lr: float, sec: float):
    """A ``history.csv`` row for the model of round ``round_index``: client means weighted by split size."""

    def mean(key: str, n_key: str) -> float:
        vals = [(m[key], m[n_key]) for m in evals if np.isfinite(m.get(key, np.nan)) and m.get(n_key, 0)]
        return round(float(np.average([v for v, _ in vals], weights=[n for _, n in vals])), 6) if vals else np.nan

    loss = [(m["train_loss"], m["num-examples"]) for m in train]
    row = {
        "epoch": round_index,
        "train_loss": round(float(np.average([v for v, _ in loss], weights=[n for _, n in loss])), 6)
        if loss
        else np.nan,
        "val_loss": mean("val_loss", "val_n"),
        "val_auc": mean("val_auc", "val_n"),
        "val_acc": mean("val_acc", "val_n"),
        "test_auc": mean("test_auc", "test_n"),
        "lr": float(train[0].get("lr", lr)) if train else lr,
        "seconds": round(sec, 2),
        "clients": len(train),
        "cpu_s": round(float(sum(m.get("cpu_s", 0.0) for m in train)), 2),
    }
    if any("dp_epsilon" in m for m in train):  # the largest client epsilon spent by the end of this round
        row["epsilon"] = round(max(m.get("dp_epsilon", 0.0) for m in train), 4)
    return row


def run_rounds(grid: Any, settings: ServerSettings) -> dict[str, Any]:
    """The federation from start (or ``--resume``) to end; writes the checkpoint each round and the final model.

    Returns:
        The ``federated`` section of ``metrics.json``.
    """
    from medclass import checkpoint
    from medclass.errors import ConfigError
    from medclass.federated.client import round_lr
    from medclass.utils.files import write_json

    a = _records()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = checkpoint.load_state(out) if settings.resume else None
    if settings.resume and saved is None:
        raise ConfigError(f"{out}: nothing to resume (no completed round saved)")
    meta, excluded = describe_federation(grid, settings, set())
    model, state = _initial_state(meta, settings.seed, None if saved is not None else settings.init_from)
    params = parameter_keys(model)
    adam = AdamState(lr=settings.server_lr)
    history: list[dict[str, Any]] = []
    mb: list[float] = []
    pending: dict[str, Any] | None = None  # the last round's training replies, until its model is evaluated
    start = 1
    if saved is not None:
        tensors, info = saved
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        adam.load({k[5:]: v for k, v in tensors.items() if k.startswith("adam.")}, info.get("adam_step", 0))
        history, mb, pending, start = info["history"], info["mb_per_round"], info["pending"], info["round"] + 1
        log.info("resuming %s after round %d", out, info["round"])
    # names this federation to the clients across server restarts (a DP client keys its accountant by it)
    federation_id = saved[1].get("federation_id") if saved is not None else None
    plan = {**settings.plan(), "federation_id": federation_id or uuid.uuid4().hex}
    for r in range(start, settings.rounds + 1):
        t0 = time.perf_counter()
        lr = round_lr(settings.lr, r, settings.rounds) if settings.lr else 0.0
        config = {**plan, "action": "train", "round": r, "round_lr": lr}
        replies: list = []
        for attempt in range(2):  # a round short of --min-clients is tried once more
            nodes = wait_for_nodes(grid, settings.min_clients, settings.timeout, excluded)
            replies = _ok(_send(grid, nodes, a.MessageType.TRAIN, config, state, settings.timeout), f"round {r}")
            if len(replies) >= settings.min_clients:
                break
            log.warning("round %d: %d of %d clients answered (--min-clients %d)%s", r, len(replies), len(nodes),
                        settings.min_clients, ": retrying" if attempt == 0 else "")  # fmt: skip
        if len(replies) < settings.min_clients:
            raise ConfigError(f"round {r}: {len(replies)} clients answered; --min-clients is {settings.min_clients}")
        states = [m.content["arrays"].to_torch_state_dict() for m in replies]
        metrics = [_metrics(m) for m in replies]
        average = weighted_average(states, [m["num-examples"] for m in metrics], list(state))
        if settings.strategy == "fedadam":
            state = fedadam_step(state, average, params, adam)
        elif settings.strategy == "fedavgm":
            state = fedavgm_step(state, average, params, adam, settings.server_momentum)
        else:
            state = average
        nbytes = sum(int(t.numel() * t.element_size()) for t in state.values())
        mb.append(round(nbytes * (len(nodes) + len(replies)) / 1e6, 3))
        if pending is not None:  # the clients evaluated the model of the previous round before training on it
            history.append(_history_row(r - 1, metrics, pending["train"], pending["lr"], pending["seconds"]))
        pending = {"train": metrics, "lr": lr, "seconds": round(time.perf_counter() - t0, 2)}
        tensors = {f"model.{k}": v for k, v in state.items()}
        tensors.update({f"adam.{k}": v for k, v in adam.tensors().items()})
        info = {"round": r, "history": history, "mb_per_round": mb, "adam_step": adam.step, "pending": pending,
                "federation_id": plan["federation_id"]}  # fmt: skip
        checkpoint.save_state(out, tensors, {**info, "settings": json.loads(settings.to_json())})
        log.info(
            "round %d/%d: %d clients, %.1f MB, %.1f s", r, settings.rounds, len(replies), mb[-1], pending["seconds"]
        )
    final_nodes = wait_for_nodes(grid, settings.min_clients, settings.timeout, excluded)
    final_cfg = {**plan, "action": FINAL, "baseline": settings.baseline, "round": settings.rounds + 1}
    finals = _ok(_send(grid, final_nodes, a.MessageType.QUERY, final_cfg, state, 3 * settings.timeout), "final")
    final_metrics = [_metrics(m) for m in finals]
    if pending is not None:
        history.append(
            _history_row(settings.rounds, final_metrics, pending["train"], pending["lr"], pending["seconds"])
        )
    model.load_state_dict(state)
    meta = dict(meta, dataset={"name": f"federation of {len(final_metrics)} clients"})
    checkpoint.save_model(out, model, meta)
    section = federated_section(settings, final_metrics, history, mb)
    write_json(out / "federation.json", section)
    return section


def federated_section(
    settings: ServerSettings, finals: list[dict[str, Any]], history: list[dict[str, Any]], mb: list[float]
) -> dict[str, Any]:
    """``metrics.json``'s ``federated`` entry: settings, each client's own test and baseline, rounds, traffic."""
    clients = []
    for m in sorted(finals, key=lambda m: m.get("client", "")):
        entry = {
            "client": f"client-{int(m.get('client', 0))}",
            "n": {s: int(m.get(f"{s}_n", 0)) for s in ("train", "val", "test")},
            "federated": {s: {k: m.get(f"{s}_{k}") for k in FIGURES} for s in ("val", "test")},
        }
        if "baseline_test_auc" in m:
            entry["local_only"] = {s: {k: m.get(f"baseline_{s}_{k}") for k in FIGURES} for s in ("val", "test")}
        clients.append(entry)
    section = {
        "strategy": settings.strategy,
        "rounds": settings.rounds,
        "local_epochs": settings.local_epochs,
        "min_clients": settings.min_clients,
        "clients": clients,
        "history": history,
        "mb_per_round": float(np.mean(mb)) if mb else 0.0,
        "client_cpu_minutes": round(sum(r.get("cpu_s", 0.0) for r in history) / 60, 3),
        "final_cpu_minutes": round(sum(m.get("cpu_s", 0.0) for m in finals) / 60, 3),  # final test and baselines
    }
    if settings.dp_epsilon:
        section["privacy"] = privacy_section(settings, finals)
    return section


def privacy_section(settings: ServerSettings, finals: list[dict[str, Any]]) -> dict[str, Any]:
    """What each client reports it spent, and the run's guarantee: the largest client epsilon at ``dp_delta``."""
    spent = {f"client-{int(m.get('client', 0))}": m for m in finals if "dp_epsilon" in m}
    return {
        "mechanism": "DP-SGD (Opacus), Poisson sampling, RDP accountant, per client",
        "target_epsilon": settings.dp_epsilon,
        "delta": settings.dp_delta,
        "max_grad_norm": settings.dp_clip,
        "epsilon": max((m["dp_epsilon"] for m in spent.values()), default=float("nan")),
        "clients": {
            name: {
                "epsilon": m["dp_epsilon"],
                "steps": int(m["dp_steps"]),
                "noise_multiplier": m["dp_noise_multiplier"],
            }
            for name, m in sorted(spent.items())
        },
    }


def finish_from_clients(settings: ServerSettings, section: dict[str, Any]) -> dict[str, Any]:
    """A deployed server's ``metrics.json`` and report: the clients' own figures, no pooled data."""
    from medclass.checkpoint import read_model_meta
    from medclass.evaluate import write_evaluation

    out = Path(settings.out)
    meta = read_model_meta(out)
    splits: dict[str, Any] = {}
    for split in ("val", "test"):
        rows = [(c["federated"][split], c["n"][split]) for c in section["clients"] if c["n"][split]]
        if rows:
            weights = [n for _, n in rows]
            splits[split] = {k: float(np.average([m[k] for m, _ in rows], weights=weights)) for k in ("auc", "acc")} | {
                "n": int(sum(weights)),
                "pooled": False,
            }
    metrics = {
        "dataset": meta.get("dataset", {}).get("name", "federation"),
        "task": meta["task"],
        "label_names": meta["label_names"],
        "splits": splits,
        "federated": section,
    }
    title = f"medclass federate (deployed): {settings.strategy}, {len(section['clients'])} clients"
    write_evaluation(out, metrics, {}, history=section["history"], config={"federated": vars(settings)}, title=title)
    return metrics
