"""A federated run in one command: Flower's simulation engine, then an ordinary run folder.

:func:`simulate` runs :mod:`.server`'s rounds and :mod:`.client`'s hospitals on ``flwr.simulation.run_simulation``
(Ray actors). The server writes ``model.safetensors``/``model.json`` and ``federation.json`` from parameters,
counts and metrics only; then, as the person who ran the simulation (and holds all its data), :func:`simulate`
calibrates the global model and tests it on the union of the clients' validation and test splits, so
``metrics.json`` has the usual ``splits`` plus a ``federated`` section, and ``report.html`` shows the rounds as its
training curves. A deployed server (:func:`medclass.federated.server.finish_from_clients`) has no data: its
``metrics.json`` holds the clients' own figures and their size-weighted means.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.errors import MedclassError
from medclass.federated.client import ClientSource, load_site
from medclass.federated.server import ServerSettings

log = logging.getLogger(__name__)


def pooled_dataset(sources: list[ClientSource], plan: dict[str, Any]) -> tuple[Any, Any]:
    """``(cfg, dataset)``: every client's share put back together (their intensity shifts kept), split by split."""
    from medclass.data.dataset import Split

    sites = [load_site(s, plan) for s in sources]
    splits = {}
    for name in sites[0].dataset.splits:
        parts = [s.dataset.splits[name] for s in sites]
        pids = None
        if all(p.patient_ids is not None for p in parts):
            pids = np.concatenate([p.patient_ids for p in parts])
        splits[name] = Split(torch.cat([p.images for p in parts]), np.concatenate([p.labels for p in parts]), pids)
    first = sites[0].dataset
    return sites[0].cfg, replace(first, splits=splits, extra=dict(first.extra))


def simulate(
    data: str,
    settings: ServerSettings,
    *,
    clients: int,
    partition: str = "iid",
    partition_seed: int | None = None,
) -> dict[str, Any]:
    """Run a federation of ``clients`` shares of ``data`` on Flower's simulation engine; the ``metrics.json`` content.

    Args:
        data: The data spec every share is cut from.
        settings: The server's settings (``settings.out`` is the run folder).
        clients: Number of clients (simulated SuperNodes).
        partition: Partition scheme (:func:`medclass.federated.partition.parse_partition`).
        partition_seed: Seed of the partition (default: ``settings.seed``).
    """
    from flwr.simulation import run_simulation

    from medclass.federated.apps import make_client_app, make_server_app
    from medclass.federated.partition import parse_partition

    spec = parse_partition(partition)
    seed = settings.seed if partition_seed is None else partition_seed
    if spec.kind == "column" and not clients:
        from medclass.federated.partition import all_rows

        site_cfg = ClientSource(data, partition, 0, 0, seed)
        clients = len(np.unique(all_rows(load_site(site_cfg, settings.plan()).dataset)[2].astype(str)))
    sources = [ClientSource(data, partition, clients, k, seed) for k in range(clients)]
    settings = replace(settings, expected_clients=clients)
    load_site(sources[0], settings.plan())  # bad data or configuration: one line now, not inside a Ray actor
    errors: list[BaseException] = []

    def settings_of(context: Any) -> ServerSettings:
        return settings

    server = make_server_app(settings_of, errors=errors)
    client = make_client_app(lambda context: sources[int(context.node_config["partition-id"])])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = max(1, min(clients, cores))
    log.info("federation: %d clients, partition %s, strategy %s, %d rounds", clients, spec, settings.strategy,
             settings.rounds)  # fmt: skip
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": cpus}},
    )
    if errors:
        raise errors[0]
    out = Path(settings.out)
    if not (out / "federation.json").is_file():
        raise MedclassError(f"{out}: the federation did not finish (see the log above)")
    return finish_simulated(settings, sources)


def finish_simulated(settings: ServerSettings, sources: list[ClientSource]) -> dict[str, Any]:
    """Calibrate and test the global model on the clients' pooled splits; write ``metrics.json`` and the report."""
    import json

    from medclass.checkpoint import load_model, save_model
    from medclass.config import dump_yaml
    from medclass.evaluate import fit_post_training, write_evaluation
    from medclass.utils.files import write_text

    out = Path(settings.out)
    section = json.loads((out / "federation.json").read_text(encoding="utf-8"))
    cfg, pooled = pooled_dataset(sources, settings.plan())
    model, meta = load_model(out)
    meta["dataset"] = pooled.record()
    metrics, plot, _ = fit_post_training(model, meta, pooled, cfg.eval, seed=settings.seed)
    metrics["federated"] = {**section, "partition": sources[0].partition, "n_clients": len(sources)}
    save_model(out, model, {k: v for k, v in meta.items() if k != "format_version"})
    cfg.name = out.name
    write_text(out / "config.yaml", dump_yaml(cfg))
    title = f"medclass federate: {pooled.name} / {cfg.model.name} / {settings.strategy}, {len(sources)} clients"
    write_evaluation(out, metrics, plot, history=section["history"], config=cfg.to_dict(), title=title)
    return metrics
