"""Federated learning on Flower's simulation engine: pooled vs local-only vs FedAvg, FedProx, FedAdam, FedBN.

For each dataset, partition and seed: ``medclass.federate(data, clients=K, partition=P, strategy=S, rounds=R,
local_epochs=E, seed=seed)`` for every strategy (the first one also trains each client's local-only model on the
same schedule), and ``medclass.train(data, epochs=R*E)`` on the pooled data (equal total epochs; the default
recipe, without its minimum step count). Recorded per run: the global test AUC and ACC (the union of the clients'
test splits; under ``shift`` every client's test images carry its own intensity shift), each client's test AUC,
the local-only models' test AUC on their own client's test split (mean and best), MB per round (the model sent to
and received from every client), the clients' CPU minutes (their processes' CPU time, reported in their replies),
and the wall minutes. Results are saved after every run to ``bench/results/federated.json``; runs already recorded
are skipped, so a killed bench resumes. ``BENCHMARKS.md`` (section ``federated``) is rewritten from it. Runs of
another schedule go under ``--tag`` (``pneumoniamnist [20 rounds]``), apart from the default one's.

Usage:
    OMP_NUM_THREADS=1 nice -n 10 python bench/federated.py [--datasets pneumoniamnist] [--seeds 0] \
        [--partitions iid dirichlet:0.3 shift] [--strategies fedavg fedprox fedadam fedbn] [--rounds 10] \
        [--local-epochs 2] [--clients 5] [--tag "20 rounds"] [--results FILE] [--out DIR]
    python bench/federated.py --merge FILE [FILE ...]   # parallel benches' results files into the saved results
    python bench/federated.py --render
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from medclass.federated.aggregate import STRATEGIES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "federated.json"
SECTION = "federated"


def federated_run(data: str, partition: str, strategy: str, seed: int, args: argparse.Namespace, baseline: bool):
    """One federation; its figures."""
    import medclass

    out = args.out / f"{name(data, args)}-{partition.replace(':', '')}-{strategy}-s{seed}".replace(" ", "_")
    t0 = time.perf_counter()
    run = medclass.federate(
        data,
        image_size=args.image_size,
        batch_size=args.batch_size,
        clients=args.clients,
        partition=partition,
        strategy=strategy,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        seed=seed,
        out=out,
        baseline=baseline,
        mu=args.mu,
        server_lr=args.server_lr,
        server_momentum=args.server_momentum,
        settings=args.settings,
    )
    m = run.metrics
    fed = m["federated"]
    own = [c["federated"]["test"]["auc"] for c in fed["clients"]]
    row: dict[str, Any] = {
        "auc": m["splits"]["test"]["auc"],
        "acc": m["splits"]["test"]["acc"],
        "bacc": m["splits"]["test"].get("balanced_accuracy"),
        "client_auc": own,
        "client_bacc": [c["federated"]["test"].get("bacc") for c in fed["clients"]],
        "curve": [r["test_auc"] for r in fed["history"]],
        "mb_per_round": fed["mb_per_round"],
        "cpu_minutes": fed["client_cpu_minutes"],
        "wall_minutes": round((time.perf_counter() - t0) / 60, 2),
    }
    if baseline:
        local = [c["local_only"]["test"]["auc"] for c in fed["clients"]]
        row["local_auc"] = local
        row["local_bacc"] = [c["local_only"]["test"].get("bacc") for c in fed["clients"]]
        row["local_cpu_minutes"] = fed["final_cpu_minutes"]
    return row


def pooled_run(data: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Centralised training at equal total epochs (rounds x local epochs)."""
    import medclass

    out = args.out / f"{name(data, args)}-pooled-s{seed}".replace(" ", "_")
    t0 = time.process_time()
    w0 = time.perf_counter()
    run = medclass.train(
        data,
        recipe="default",
        out=out,
        epochs=args.rounds * args.local_epochs,
        seed=seed,
        progress=False,
        **({"image_size": args.image_size} if args.image_size else {}),
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **{"train.min_steps": 0, **args.settings},
    )
    cpu = round((time.process_time() - t0) / 60, 2)
    return {
        "auc": run.metrics["splits"]["test"]["auc"],
        "acc": run.metrics["splits"]["test"]["acc"],
        "bacc": run.metrics["splits"]["test"].get("balanced_accuracy"),
        "client_bacc": {p: pooled_on_clients(data, seed, p, args, out) for p in args.partitions if p != "iid"},
        "cpu_minutes": cpu,
        "wall_minutes": round((time.perf_counter() - w0) / 60, 2),
    }


def pooled_on_clients(data: str, seed: int, partition: str, args: argparse.Namespace, run_dir: Path) -> list[float]:
    """The pooled model's balanced accuracy on each client's own test split, cut as that federation cuts it.

    The same figure the clients report for the federated and local-only models (argmax, mean recall over the
    classes present; :func:`medclass.federated.client.local_evaluate`), so the three compare on the same rows.
    """
    from medclass.checkpoint import load_model
    from medclass.federated.client import ClientSource, Site, load_site, local_evaluate
    from medclass.federated.server import ServerSettings

    plan = ServerSettings(
        out="", seed=seed, batch_size=args.batch_size, image_size=args.image_size, settings=args.settings
    ).plan()
    model, meta = load_model(run_dir)
    out = []
    for k in range(args.clients):
        site = load_site(ClientSource(data, partition, args.clients, k, seed), plan)
        out.append(local_evaluate(Site(site.cfg, site.dataset, meta, site.source), model, "test")["bacc"])
    return out


def label(data: str) -> str:
    """The name a dataset's results go under: a catalog name as given; a manifest, its folder's name."""
    path = Path(data)
    return path.parent.name if path.suffix == ".csv" else path.stem if path.suffix == ".npz" else data


def name(data: str, args: argparse.Namespace) -> str:
    """The results key of ``data`` under ``args``: its label, plus ``--tag`` and the ``--set`` settings.

    E.g. ``ham10000 [optim.logit_adjust=1]`` or ``pneumoniamnist [20 rounds]``.
    """
    tags = [args.tag] if getattr(args, "tag", None) else []
    tags += [f"{k}={v}" for k, v in sorted(args.settings.items())]
    return f"{label(data)} [{', '.join(tags)}]" if tags else label(data)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def render(saved: dict) -> str:
    """The ``BENCHMARKS.md`` section: one table per dataset, targets, per-round curves, commands."""
    lines = [
        "Global test AUC (the union of the clients' test splits) of one model trained by each strategy on Flower's "
        "simulation engine, against the same recipe trained on the pooled data for the same total epochs and "
        "against each client's local-only model (tested on its own client's test split; mean and best). "
        "Mean over the seeds run; MB per round counts the model sent to and received from every client; "
        "CPU-min is the clients' CPU time for the federation (the local-only baselines not included).",
        "",
    ]
    results = {
        data: {p: {m: {k: r for k, r in seeds.items() if "error" not in r} for m, seeds in ms.items()}
               for p, ms in parts.items()}
        for data, parts in saved.get("results", {}).items()
    }  # fmt: skip
    for data, parts in results.items():
        pooled_runs = list(parts.get("pooled", {}).get("pooled", {}).values())
        pooled, pooled_bacc = _mean([r["auc"] for r in pooled_runs]), _mean([r.get("bacc") for r in pooled_runs])
        head = f"**{data}** ({saved.get('setup', {}).get(data, '')}): pooled AUC **{pooled:.3f}**"
        head += f" ({len(pooled_runs)} seed(s))"
        with_bacc = sum(r.get("bacc") is not None for r in pooled_runs)
        head += f", balanced ACC {pooled_bacc:.3f} ({with_bacc} seed(s))" if np.isfinite(pooled_bacc) else ""
        lines += [head, ""]
        lines += [
            "| partition | strategy | AUC | ACC | bal. ACC | clients' own AUC (mean) | MB/round | CPU-min | seeds |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|---|"]
        for partition, methods in parts.items():
            if partition == "pooled":
                continue
            for method, seeds in methods.items():
                runs = [r for r in seeds.values() if "auc" in r]
                if not runs:
                    continue
                if method == "local":
                    continue
                own = _mean([_mean(r["client_auc"]) for r in runs])
                auc, acc = _mean([r["auc"] for r in runs]), _mean([r["acc"] for r in runs])
                mb, cpu = _mean([r["mb_per_round"] for r in runs]), _mean([r["cpu_minutes"] for r in runs])
                bacc = _mean([r.get("bacc") for r in runs])
                bacc_cell = f"{bacc:.3f}" if np.isfinite(bacc) else "-"
                cells = [
                    partition,
                    method,
                    f"{auc:.3f}",
                    f"{acc:.3f}",
                    bacc_cell,
                    f"{own:.3f}",
                    f"{mb:.1f}",
                    f"{cpu:.1f}",
                ]
                lines.append("| " + " | ".join([*cells, str(len(runs))]) + " |")
            local = [r for s in methods.values() for r in s.values() if "local_auc" in r]
            if local:
                mean_l = _mean([_mean(r["local_auc"]) for r in local])
                best_l = _mean([max(v for v in r["local_auc"] if np.isfinite(v)) for r in local])
                bacc_l = _mean([_mean(r.get("local_bacc") or []) for r in local])
                bacc_cell = f"{bacc_l:.3f} (mean)" if np.isfinite(bacc_l) else ""
                lines.append(
                    f"| {partition} | local-only (mean / best client) | {mean_l:.3f} / {best_l:.3f} | | {bacc_cell} "
                    "| | | | |"
                )
        lines.append("")
        lines += _targets(data, parts, pooled, pooled_bacc)
        lines.append("")
        lines += ["Per-round global-model test AUC (client-size-weighted mean of the clients' own test AUC):", ""]
        lines += ["| partition | strategy | " + " | ".join(f"r{i}" for i in range(1, 1 + _rounds(parts))) + " |"]
        lines += ["|---|---|" + "---|" * _rounds(parts)]
        for partition, methods in parts.items():
            for method, seeds in methods.items():
                curves = [r["curve"] for r in seeds.values() if r.get("curve")]
                if curves:
                    mean_curve = np.nanmean(np.array(curves, dtype=float), axis=0)
                    lines.append(f"| {partition} | {method} | " + " | ".join(f"{v:.3f}" for v in mean_curve) + " |")
        lines.append("")
    lines += [f"Machine: {saved.get('machine', '?')}. Commands:", ""]
    lines += [f"    {c}" for c in saved.get("commands", [])]
    return "\n".join(lines)


def _rounds(parts: dict) -> int:
    return max((len(r.get("curve", [])) for m in parts.values() for s in m.values() for r in s.values()), default=0)


def _auc(parts: dict, partition: str, method: str) -> float:
    return _mean([r["auc"] for r in parts.get(partition, {}).get(method, {}).values() if "auc" in r])


def _targets(data: str, parts: dict, pooled: float, pooled_bacc: float) -> list[str]:
    """The issue's targets that these runs can check, each met or not (IID and CPU time: PneumoniaMNIST's)."""
    out = []
    pneumonia = data.split(" [")[0] == "pneumoniamnist"  # tagged keys too: ``pneumoniamnist [20 rounds]``
    if "iid" in parts and pneumonia:
        fedavg = _auc(parts, "iid", "fedavg")
        out.append(f"- IID FedAvg within 0.005 of pooled: {fedavg:.3f} vs {pooled:.3f}: "
                   f"{'met' if round(pooled - fedavg, 4) <= 0.005 else 'not met'}")  # fmt: skip
    for partition in ("dirichlet:0.3",):
        if partition in parts:
            best_name, best = max(((m, _auc(parts, partition, m)) for m in STRATEGIES if m in parts[partition]),
                                  key=lambda t: t[1])  # fmt: skip
            margins = client_margins(parts[partition], best_name)
            wins = sum(m > 0 for m in margins)
            verdict = "met" if margins and wins == len(margins) else "not met"
            out.append(f"- Dirichlet 0.3, best strategy ({best_name} {best:.3f}) within 0.02 of pooled ({pooled:.3f}): "
                       f"{'met' if round(pooled - best, 4) <= 0.02 else 'not met'}")  # fmt: skip
            worst = min(margins, default=float("nan"))
            out.append(f"- Dirichlet 0.3, {best_name} above every local-only model, each on its own client's test "
                       f"split: ahead in {wins} of {len(margins)} (seed, client) pairs with a defined AUC, "
                       f"worst margin {worst:+.3f}: {verdict}")  # fmt: skip
    if "dirichlet:0.5" in parts:
        out += _gap_closed(parts["dirichlet:0.5"], pooled_bacc, parts.get("pooled", {}).get("pooled", {}))
    if "shift" in parts and "fedbn" in parts["shift"] and "fedavg" in parts["shift"]:
        bn, avg = _auc(parts, "shift", "fedbn"), _auc(parts, "shift", "fedavg")
        out.append(
            f"- shift: FedBN >= FedAvg on the global test: {bn:.4f} vs {avg:.4f}: {'met' if bn >= avg else 'not met'}"
        )

        def own(method: str) -> float:
            return _mean([_mean(r["client_auc"]) for r in parts["shift"][method].values() if "client_auc" in r])

        bn, avg = own("fedbn"), own("fedavg")
        out.append(f"- shift: FedBN >= FedAvg on each client's own test (FedBN's model with that client's batch norm): "
                   f"{bn:.3f} vs {avg:.3f}: {'met' if bn >= avg else 'not met'}")  # fmt: skip
    runs = [r for m in parts.values() for s in m.values() for r in s.values() if "curve" in r and r.get("cpu_minutes")]
    if runs and pneumonia:
        per_round = _mean([r["cpu_minutes"] / len(r["curve"]) for r in runs])
        verdict = "met" if 20 * per_round <= 15 else "not met"
        how = "measured" if all(len(r["curve"]) == 20 for r in runs) else "extrapolated"
        out.append(f"- 5 clients, 20 rounds <= 15 CPU-minutes: {per_round:.2f} CPU-min per round measured, so "
                   f"{20 * per_round:.1f} for 20 rounds ({how}): {verdict}")  # fmt: skip
    return out


def client_margins(methods: dict, strategy: str) -> list[float]:
    """``strategy``'s AUC minus the local-only model's, per (seed, client), both on that client's own test split.

    The local-only AUCs come from whichever strategy's rows of the same seed carry them (the first one run); pairs
    where either AUC is undefined (a client's test split with one class) are left out.
    """
    local = {seed: r["local_auc"] for rows in methods.values() for seed, r in rows.items() if r.get("local_auc")}
    out = []
    for seed, row in methods.get(strategy, {}).items():
        for fed, alone in zip(row.get("client_auc", []), local.get(seed, [])):
            if fed is not None and alone is not None and np.isfinite(fed) and np.isfinite(alone):
                out.append(round(float(fed) - float(alone), 4))
    return out


def gap_closed_own_tests(methods: dict, pooled_runs: dict, partition: str) -> dict[str, Any] | None:
    """The dermoscopy gap measured on the same test rows: each client's own test split for all three models.

    Per seed that has all three: the mean over clients of the local-only models' balanced accuracy, of the pooled
    model's (``pooled_runs[seed]["client_bacc"][partition]``) and of each strategy's global model's
    (``client_bacc``); those means are averaged over the seeds, and the strategy with the highest is the best.

    Returns:
        ``{"best", "fed", "local", "pooled", "closed", "seeds"}``, or ``None`` when no seed has all three.
    """
    local = {seed: _mean(r["local_bacc"]) for rows in methods.values() for seed, r in rows.items()
             if r.get("local_bacc")}  # fmt: skip
    pooled = {seed: _mean(r["client_bacc"][partition]) for seed, r in pooled_runs.items()
              if partition in r.get("client_bacc", {})}  # fmt: skip
    seeds = sorted(set(local) & set(pooled))
    scored = []
    for method, rows in methods.items():
        if method in STRATEGIES and seeds and all(rows.get(seed, {}).get("client_bacc") for seed in seeds):
            scored.append((method, _mean([_mean(rows[seed]["client_bacc"]) for seed in seeds])))
    if not scored:
        return None
    best, fed = max(scored, key=lambda t: t[1])
    mean_local, mean_pooled = _mean([local[s] for s in seeds]), _mean([pooled[s] for s in seeds])
    closed = (fed - mean_local) / (mean_pooled - mean_local) if mean_pooled != mean_local else float("nan")
    return {"best": best, "fed": fed, "local": mean_local, "pooled": mean_pooled, "closed": closed, "seeds": seeds}


def _gap_closed(methods: dict, pooled_bacc: float, pooled_runs: dict | None = None) -> list[str]:
    """Dermoscopy's target: the best strategy closes >= 70% of the balanced-accuracy gap from local-only to pooled.

    With the pooled model's figures on each client's test split, the measure compares like with like
    (:func:`gap_closed_own_tests`); older results only have pooled on the global test, a mixed comparison.
    """
    fair = gap_closed_own_tests(methods, pooled_runs or {}, "dirichlet:0.5")
    if fair is not None:
        return [
            f"- Dirichlet 0.5, every model on each client's own test split (mean over clients, {len(fair['seeds'])} "
            f"seed(s)): the best strategy ({fair['best']}, balanced ACC {fair['fed']:.3f}) closes "
            f"{fair['closed']:.0%} of the gap between the local-only models ({fair['local']:.3f}) and pooled "
            f"({fair['pooled']:.3f}) (target >= 70%): {'met' if fair['closed'] >= 0.7 else 'not met'}"
        ]
    local = [_mean(r["local_bacc"]) for s in methods.values() for r in s.values() if r.get("local_bacc")]
    scored = [(m, _mean([r.get("bacc") for r in s.values()])) for m, s in methods.items() if m in STRATEGIES]
    scored = [(m, v) for m, v in scored if np.isfinite(v)]
    if not local or not scored or not np.isfinite(pooled_bacc):
        return []
    best_name, best = max(scored, key=lambda t: t[1])
    mean_local = _mean(local)
    closed = (best - mean_local) / (pooled_bacc - mean_local) if pooled_bacc != mean_local else float("nan")
    return [
        f"- Dirichlet 0.5: the best strategy ({best_name}, balanced ACC {best:.3f} on the global test) closes "
        f"{closed:.0%} of the gap between the mean local-only model ({mean_local:.3f}, on its own client's test) "
        f"and pooled ({pooled_bacc:.3f}, global test): a mixed comparison, as these runs lack the pooled model's "
        f"figures on each client's test (target >= 70%): {'met' if closed >= 0.7 else 'not met'}"
    ]


def merge(into: dict, other: dict) -> None:
    """Add ``other``'s commands, setup and runs (data, partition, method, seed) to ``into`` (runs of ``into`` win)."""
    from benchmd import merge_saved

    into.setdefault("setup", {}).update({k: v for k, v in other.get("setup", {}).items() if k not in into["setup"]})
    merge_saved(into, other, depth=4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--partitions", nargs="*", default=["iid", "dirichlet:0.3", "shift"])
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--mu", type=float, default=0.01)
    ap.add_argument("--server-lr", type=float, help="server learning rate (default: the strategy's)")
    ap.add_argument("--server-momentum", type=float, default=0.9)
    ap.add_argument("--image-size", type=int, help="resize the images to this side (default: as stored)")
    ap.add_argument("--batch-size", type=int, help="batch size of the clients and of pooled training (default: recipe)")
    ap.add_argument("--no-pooled", action="store_true")
    ap.add_argument(
        "--baseline-partitions",
        nargs="+",
        help="partitions whose first strategy also trains the local-only models (default: all)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-federated")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from saved results")
    ap.add_argument("--results", type=Path, default=RESULTS, help="results file (several benches in parallel)")
    ap.add_argument("--merge", type=Path, nargs="+", help="merge these results files into --results, then render")
    ap.add_argument("--tag", help="a label these results are kept apart under (e.g. '20 rounds')")
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a config key for the clients and pooled training (e.g. optim.logit_adjust=1); results are kept apart",
    )
    args = ap.parse_args()
    from medclass.cli.common import set_options

    args.settings = set_options(args.set)
    sys.path.insert(0, str(ROOT / "bench"))
    from benchmd import load_results, update_section

    results = args.results
    saved = load_results(results, args.merge, merge)
    if not args.render and not args.merge:
        command = "OMP_NUM_THREADS=1 nice -n 10 python bench/federated.py " + shlex.join(sys.argv[1:])
        saved["commands"] = [*dict.fromkeys([*saved.get("commands", []), command])]
        from machine import cpu_description

        saved["machine"] = (
            f"{cpu_description()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        )
        for data in args.datasets:
            setup = f"{args.clients} clients, {args.rounds} rounds x {args.local_epochs} local epochs, default recipe"
            setup += f", {args.image_size} px" if args.image_size else ""
            setup += f", batch {args.batch_size}" if args.batch_size else ""
            setup += "".join(f", {k}={v}" for k, v in sorted(args.settings.items()))
            saved.setdefault("setup", {})[name(data, args)] = setup
            cells = saved["results"].setdefault(name(data, args), {})
            for seed in args.seeds:
                jobs = [("pooled", "pooled")] if not args.no_pooled else []
                jobs += [(p, s) for p in args.partitions for s in args.strategies]
                for partition, method in jobs:
                    cell = cells.setdefault(partition, {}).setdefault(method, {})
                    if str(seed) in cell and "error" not in cell[str(seed)]:
                        continue
                    print(f"[federated] {name(data, args)} {partition} {method} seed {seed}", flush=True)
                    try:
                        if method == "pooled":
                            cell[str(seed)] = pooled_run(data, seed, args)
                        else:
                            first = method == args.strategies[0] and (
                                args.baseline_partitions is None or partition in args.baseline_partitions
                            )
                            cell[str(seed)] = federated_run(data, partition, method, seed, args, baseline=first)
                    except Exception as err:  # noqa: BLE001 - recorded, the bench goes on
                        cell[str(seed)] = {"error": f"{type(err).__name__}: {err}"}
                    results.parent.mkdir(parents=True, exist_ok=True)
                    results.write_text(json.dumps(saved, indent=1) + "\n")
                    print(f"[federated]   {json.dumps(cell[str(seed)])[:300]}", flush=True)
    if results.resolve() != RESULTS.resolve():
        print(f"results in {results}; BENCHMARKS.md is written from {RESULTS.name} (--merge {results})")
        return
    update_section(SECTION, "Federated learning", render(saved))


if __name__ == "__main__":
    main()
