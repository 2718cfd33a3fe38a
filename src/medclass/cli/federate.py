"""``medclass federate``: a simulation (:func:`medclass.api.federate`), or one real process (``--role``)."""

from __future__ import annotations

import argparse
from typing import Any

from medclass.cli.common import set_options
from medclass.errors import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedbn", "fedavgm")


def cmd_federate(args: argparse.Namespace) -> int:
    from medclass.api import require_flower

    require_flower()
    if args.role == "client":
        return _client(args)
    if args.role == "server":
        return _server(args)
    import medclass.api as api

    if not args.data:
        raise ConfigError("federate: --data is required (the data the simulated clients share)")
    run = api.federate(
        args.data,
        clients=args.clients,
        partition=args.partition,
        strategy=args.strategy,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        out=args.out,
        model=args.model,
        recipe=args.recipe,
        lr=args.lr,
        batch_size=args.batch_size,
        image_size=args.image_size,
        seed=args.seed,
        mu=args.mu,
        server_lr=args.server_lr,
        server_momentum=args.server_momentum,
        min_clients=args.min_clients,
        baseline=not args.no_baseline,
        resume=args.resume,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_clip=args.dp_clip,
        init_from=args.init_from,
        settings=set_options(args.set),
    )
    print_federation(run.metrics, str(run.path))
    return 0


def _server(args: argparse.Namespace) -> int:
    import medclass.api as api

    if not args.out:
        raise ConfigError("--role server: give --out, the run folder")
    if args.data:
        raise ConfigError("--role server: the server holds no data; give --data to each client")
    run = api.federate_server(
        args.out,
        listen=args.listen or "127.0.0.1:9092",
        certificates=args.certificates,
        insecure=args.insecure,
        authorized_keys=args.authorized_keys,
        clients=args.clients if args.clients_given else 0,
        rounds=args.rounds,
        strategy=args.strategy,
        local_epochs=args.local_epochs,
        lr=args.lr,
        mu=args.mu,
        server_lr=args.server_lr,
        server_momentum=args.server_momentum,
        min_clients=args.min_clients or 2,
        seed=args.seed,
        model=args.model,
        recipe=args.recipe,
        batch_size=args.batch_size,
        image_size=args.image_size,
        baseline=not args.no_baseline,
        resume=args.resume,
        timeout=args.round_timeout,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_clip=args.dp_clip,
        init_from=args.init_from,
        settings=set_options(args.set),
    )
    print_federation(run.metrics, args.out)
    return 0


def _client(args: argparse.Namespace) -> int:
    import medclass.api as api

    if not args.data or not args.server:
        raise ConfigError("--role client: give --data (this hospital's data) and --server HOST:PORT")
    return api.federate_client(
        args.data,
        args.server,
        root_certificates=args.root_certificates,
        insecure=args.insecure,
        auth_key=args.auth_key,
        partition=args.partition if args.partition_given else None,
        clients=args.clients,
        client_id=args.client_id,
        seed=args.seed,
    )


def print_federation(metrics: dict[str, Any], where: str) -> None:
    """Global and per-client test figures as a table on stdout."""
    from medclass.cli.common import print_table

    fed = metrics.get("federated", {})
    test = metrics.get("splits", {}).get("test", {})
    print(f"\n{fed.get('strategy', '?')}, {len(fed.get('clients', []))} clients, {fed.get('rounds')} rounds: {where}")
    print(f"global test: AUC {test.get('auc', float('nan')):.4f}, ACC {test.get('acc', float('nan')):.4f}")
    rows = []
    for c in fed.get("clients", []):
        own = c["federated"]["test"]
        local = c.get("local_only", {}).get("test", {})
        rows.append([c["client"], str(c["n"]["test"]), f"{own['auc']:.4f}", f"{local.get('auc', float('nan')):.4f}"])
    print_table(rows, ["client", "test n", "federated AUC", "local-only AUC"])
    if priv := fed.get("privacy"):
        print(f"differential privacy: epsilon {priv['epsilon']:.2f} at delta {priv['delta']:g} (largest client)")


class _Given(argparse.Action):
    """Store the value and note that it was given (``<dest>_given``)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_federate_command(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``federate`` to the ``medclass`` subcommand parser."""
    p = sub.add_parser(
        "federate",
        help="federated learning with Flower: a simulation, or a real server or client",
        parents=parents,
        formatter_class=formatter,
        description="Train one model across hospitals that keep their images. Without --role: Flower's simulation "
        "engine shares --data among --clients. With --role server: a Flower SuperLink and the federation's server "
        "(no data). With --role client: one hospital (a Flower SuperNode) joining --server with its own --data.",
    )
    p.add_argument("--role", choices=("server", "client"), help="run one real process of a deployment")
    p.add_argument("--data", help="the data: shared out (simulation) or this hospital's own (--role client)")
    p.add_argument("--clients", type=int, default=5, action=_Given, help="number of clients (column:NAME: 0 = sites)")
    p.add_argument(
        "--partition",
        default="iid",
        action=_Given,
        help="iid, dirichlet:ALPHA, quantity:ALPHA, shift or column:NAME (with --role client: take share "
        "--client-id of --clients of --data)",
    )
    p.add_argument("--strategy", default="fedavg", type=str.lower, choices=STRATEGIES, help="aggregation")
    p.add_argument("--rounds", type=int, default=10, help="rounds of federated training")
    p.add_argument("--local-epochs", type=int, default=1, help="passes over a client's training split per round")
    p.add_argument(
        "--min-clients", type=int, help="clients that must answer for a round to count (default: all; --role server: 2)"
    )
    p.add_argument("--model", help="architecture (default: the recipe's)")
    p.add_argument("--recipe", default="default", help="the recipe the clients train with")
    p.add_argument("--lr", type=float, help="clients' learning rate in round 1 (cosine to 1/20 by the last)")
    p.add_argument("--batch-size", type=int, help="clients' batch size")
    p.add_argument("--image-size", type=int, help="resize images to this side")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition, the model and the shuffles")
    p.add_argument("--mu", type=float, default=0.01, help="FedProx's proximal weight")
    p.add_argument("--server-lr", type=float, help="server learning rate of fedadam and fedavgm (default: 0.01 and 1)")
    p.add_argument("--server-momentum", type=float, default=0.9, help="fedavgm's server momentum")
    p.add_argument("--no-baseline", action="store_true", help="skip each client's local-only baseline")
    p.add_argument(
        "--dp-epsilon",
        type=float,
        default=0.0,
        metavar="EPS",
        help="differential privacy: DP-SGD on every client, each spending at most this epsilon over the run",
    )
    p.add_argument(
        "--dp-delta", type=float, default=1e-5, metavar="DELTA", help="delta of each client's (epsilon, delta)"
    )
    p.add_argument(
        "--dp-clip", type=float, default=1.0, metavar="NORM", help="DP-SGD: clip each row's gradient to this L2 norm"
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start the global model from this run's weights (e.g. trained on public data; the head of another "
        "task is not copied)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a config key every client sets over the recipe, e.g. optim.logit_adjust=1 (repeat)",
    )
    p.add_argument("--out", help="run folder (default runs/<data>-fed-<strategy>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue after the last completed round saved in --out")
    g = p.add_argument_group("deployment (--role)")
    g.add_argument("--listen", metavar="HOST:PORT", help="server: where the SuperLink listens (127.0.0.1:9092)")
    g.add_argument("--server", metavar="HOST:PORT", help="client: the server's SuperLink")
    g.add_argument("--certificates", metavar="DIR", help="server: ca.pem, server.pem, server.key (made when absent)")
    g.add_argument("--root-certificates", metavar="CA.pem", help="client: the CA that signed the server's certificate")
    g.add_argument("--insecure", action="store_true", help="no TLS (loopback experiments only)")
    g.add_argument("--authorized-keys", metavar="DIR", help="server: accept only clients whose *.pub key is here")
    g.add_argument("--auth-key", metavar="KEY", help="client: its private key (for --authorized-keys servers)")
    g.add_argument("--client-id", type=int, default=0, help="client: its index (name, seed, share of --partition)")
    g.add_argument("--round-timeout", type=float, default=600.0, help="server: seconds to wait for a round's replies")
    p.set_defaults(func=cmd_federate, clients_given=False, partition_given=False)
