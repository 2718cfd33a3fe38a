"""The Flower apps: a ``ClientApp`` around :mod:`.client` and a ``ServerApp`` around :mod:`.server`.

:func:`make_client_app` and :func:`make_server_app` build them for the simulation engine (settings in a closure);
the module attributes :data:`client_app` and :data:`server_app` are what Flower's deployment runtime loads
(``flwr-clientapp``/``flwr-serverapp`` import ``medclass.federated.apps:client_app``), reading their settings from
the SuperNode's ``--node-config`` (the client's data: ``data``, and optionally ``partition``, ``clients``,
``client-id``) and from the run's ``--run-config`` (the server's :class:`~.server.ServerSettings`, as ``settings``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medclass.errors import DataError
from medclass.federated.client import (
    ClientSource,
    Site,
    build_network,
    check_agrees,
    describe,
    load_site,
    local_baseline,
    local_evaluate,
    local_train,
    local_train_private,
    privacy_config,
    round_lr,
)

log = logging.getLogger(__name__)

LOCAL_STATE = "medclass-local"  # the client's batch-norm tensors under FedBN, kept in Flower's per-node state
DP_STATE = "medclass-dp"  # the client's DP accountant (JSON), kept in Flower's per-node state across rounds


def _plan(msg: Any) -> dict[str, Any]:
    rec = msg.content["config"]
    return {k: rec[k] for k in rec}


def _model_from(site: Site, msg: Any, context: Any, plan: dict[str, Any]) -> torch.nn.Module:
    """The network with the message's weights; under FedBN the client's own batch-norm tensors when it has them."""
    from medclass.federated.aggregate import batchnorm_keys

    model = build_network(site)
    state = msg.content["arrays"].to_torch_state_dict()
    if plan.get("strategy") == "fedbn" and LOCAL_STATE in context.state:
        own = context.state[LOCAL_STATE].to_torch_state_dict()
        state.update({k: v for k, v in own.items() if k in batchnorm_keys(model)})
    model.load_state_dict(state)
    return model


def _keep_local(model: torch.nn.Module, context: Any, plan: dict[str, Any]) -> None:
    from flwr.app import ArrayRecord

    from medclass.federated.aggregate import batchnorm_keys

    if plan.get("strategy") == "fedbn":
        keys = batchnorm_keys(model)
        context.state[LOCAL_STATE] = ArrayRecord({k: v for k, v in model.state_dict().items() if k in keys})


def _eval_record(site: Site, model: torch.nn.Module, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for split in ("val", "test"):
        for key, value in local_evaluate(site, model, split).items():
            out[f"{prefix}{split}_{key}"] = float(value)
    return out


def _accountant_file(source: ClientSource, plan: dict[str, Any]) -> Path:
    """Where this client keeps its DP accountant for this federation, outside Flower (it survives a restart)."""
    import hashlib

    from medclass.data.download import cache_dir

    key = hashlib.sha256((source.key() + str(plan.get("federation_id", ""))).encode()).hexdigest()[:32]
    return cache_dir() / "dp-accountants" / f"{key}.json"


def _accountant(context: Any, source: ClientSource, plan: dict[str, Any]) -> dict[str, Any] | None:
    """The DP accountant state this client saved after its last round of this federation, or ``None``.

    Flower's per-node state first; then the client's own file (:func:`_accountant_file`), so a client process that
    restarts, or a federation the server resumes, still counts the budget already spent.
    """
    from medclass.federated.privacy import load_accountant_json

    if DP_STATE in context.state:
        return load_accountant_json(str(context.state[DP_STATE]["accountant"]))
    path = _accountant_file(source, plan)
    return load_accountant_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def _private_round(
    site: Site, model: torch.nn.Module, context: Any, source: ClientSource, plan: dict[str, Any]
) -> dict[str, Any]:
    """A DP-SGD round; the accountant goes to the node's state and the client's own file."""
    from flwr.app import ConfigRecord

    from medclass.utils.files import write_text

    config = privacy_config(plan)
    done, state = local_train_private(
        site,
        model,
        config=config,
        rounds=int(plan["rounds"]),
        round_index=int(plan["round"]),
        epochs=int(plan["local_epochs"]),
        lr=config.lr,
        state=_accountant(context, source, plan),
    )
    text = json.dumps(state)
    path = _accountant_file(source, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)  # atomically: a killed client leaves the last complete state
    context.state[DP_STATE] = ConfigRecord({"accountant": text})
    return done


def _privacy_metrics(done: dict[str, Any]) -> dict[str, float]:
    return {f"dp_{k}": float(done[k]) for k in ("epsilon", "delta", "steps", "noise_multiplier")}


def handle(msg: Any, context: Any, source: ClientSource) -> Any:
    """One message to a client: ``describe``, ``join``, ``train`` or ``final``; the reply message.

    Raises:
        DataError: On ``join``, a client whose labels, task, channels or image size differ from the federation's.
    """
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    cpu0 = time.process_time()
    plan = _plan(msg)
    site = load_site(source, plan)
    action = plan.get("action", "train")
    if action == "describe":
        return Message(RecordDict({"config": ConfigRecord({"describe": json.dumps(describe(site), sort_keys=True)})}),
                       reply_to=msg)  # fmt: skip
    if action == "join":
        try:
            check_agrees(site.meta, json.loads(plan["federation"]), f"client {source.index}")
        except DataError as err:  # the reason goes to the server, the data's name only to this client's status
            report_status(f"{source.spec}: {err}")
            raise
        report_status("")
        return Message(RecordDict({"config": ConfigRecord({"joined": True})}), reply_to=msg)
    model = _model_from(site, msg, context, plan)
    metrics: dict[str, Any] = {"client": f"client-{source.index}", "train_n": float(len(site.dataset.splits["train"]))}
    metrics.update(_eval_record(site, model))  # the model as received (with own BN under FedBN), before training
    rounds, r = int(plan["rounds"]), int(plan["round"])
    base = float(plan.get("lr") or site.cfg.optim.lr)
    dp = privacy_config(plan)
    if action == "final":
        if dp is not None and (spent := _accountant(context, source, plan)) is not None:
            metrics.update(_privacy_metrics({**spent, "steps": sum(n for *_, n in spent["history"])}))
        if plan.get("baseline"):
            seed = int(plan["seed"]) * 1000 + source.index
            base = dp.lr if dp is not None else base
            base_m = local_baseline(
                site, rounds=rounds, local_epochs=int(plan["local_epochs"]), lr=base, seed=seed, privacy=dp
            )
            metrics.update({f"baseline_{s}_{k}": float(v) for s, m in base_m.items() for k, v in m.items()})
        metrics["cpu_s"] = time.process_time() - cpu0
        return Message(RecordDict({"metrics": MetricRecord(_finite(metrics))}), reply_to=msg)
    if dp is not None:
        done = _private_round(site, model, context, source, plan)
        lr = done["lr"]
        metrics.update(_privacy_metrics(done))
    else:
        lr = float(plan.get("round_lr") or 0.0) or round_lr(base, r, rounds)
        seed = int(plan["seed"]) * 100003 + r * 101 + source.index
        done = local_train(
            site, model, epochs=int(plan["local_epochs"]), lr=lr, mu=float(plan.get("mu", 0.0)), seed=seed
        )
    _keep_local(model, context, plan)
    metrics.update({"num-examples": done["n"], "train_loss": done["train_loss"], "lr": lr})
    metrics["cpu_s"] = time.process_time() - cpu0  # this client's CPU time for the round (evaluation included)
    reply = {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(_finite(metrics))}
    return Message(RecordDict(reply), reply_to=msg)


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """MetricRecord values: ints and floats only; ``client`` (``client-3``) goes as its index."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if k == "client":
            out[k] = int(str(v).rsplit("-", 1)[-1])
        else:
            out[k] = int(v) if isinstance(v, int) else float(v)
    return out


#: Environment variable naming the file where a deployed client's ClientApp processes leave their status for
#: ``medclass federate --role client`` (an empty file: joined; one line: refused, and why).
STATUS_ENV = "MEDCLASS_FED_STATUS"


def report_status(line: str) -> None:
    """Write this client's join status where :data:`STATUS_ENV` says (nothing without it)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        Path(path).write_text(line, encoding="utf-8")


def make_client_app(source_of: Callable[[Any], ClientSource]) -> Any:
    """A ``ClientApp`` whose client data is ``source_of(context)`` (e.g. the simulation's ``partition-id``)."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        return handle(msg, context, source_of(context))

    @app.query()
    def query(msg: Any, context: Any) -> Any:
        return handle(msg, context, source_of(context))

    return app


def source_from_node_config(context: Any) -> ClientSource:
    """A deployed client's data, from ``flower-supernode --node-config 'data="..." partition="iid" ...'``."""
    from medclass.errors import ConfigError

    cfg = context.node_config
    if "data" not in cfg:
        raise ConfigError("the SuperNode has no 'data' in --node-config (use medclass federate --role client)")
    partition = str(cfg.get("partition", "")) or None
    return ClientSource(
        spec=str(cfg["data"]),
        partition=partition,
        clients=int(cfg.get("clients", 1)),
        index=int(cfg.get("client-id", cfg.get("partition-id", 0))),
        seed=int(cfg.get("partition-seed", 0)),
    )


def make_server_app(
    settings_of: Callable[[Any], Any],
    on_done: Callable[[Any, dict[str, Any]], None] | None = None,
    errors: list[BaseException] | None = None,
    log_file: str | None = None,
) -> Any:
    """A ``ServerApp`` running :func:`medclass.federated.server.run_rounds` with ``settings_of(context)``.

    With ``errors``, an exception of the rounds is appended there instead of raised (the simulation runtime runs the
    server in a thread and would only log it); the caller re-raises it. With ``log_file`` (a name in the run
    folder), the ``medclass`` loggers also write there: a deployed ``ServerApp`` runs in a process of the
    SuperLink's, whose output nobody reads.
    """
    from flwr.serverapp import ServerApp

    from medclass.federated.server import run_rounds

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        try:
            settings = settings_of(context)
            if log_file:
                _log_to(Path(settings.out) / log_file)
            section = run_rounds(grid, settings)
            if on_done is not None:
                on_done(settings, section)
        except BaseException as err:
            if errors is None:
                raise
            errors.append(err)

    return app


def _log_to(path: Path) -> None:
    """Add a handler writing INFO and above of the ``medclass`` loggers to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("medclass")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _settings_from_run_config(context: Any) -> Any:
    from medclass.federated.server import ServerSettings

    return ServerSettings(**json.loads(str(context.run_config["settings"])))


def _finish_deployed(settings: Any, section: dict[str, Any]) -> None:
    from medclass.federated.server import finish_from_clients

    finish_from_clients(settings, section)


client_app = make_client_app(source_from_node_config)
server_app = make_server_app(_settings_from_run_config, on_done=_finish_deployed, log_file="federation.log")
