"""What differential privacy costs a federation: ``medclass federate`` with and without ``--dp-epsilon``, same seeds.

For each seed: ``medclass.federate(data, clients=K, partition="iid", rounds=R, local_epochs=E, model=M, seed=s)``
twice, once with the default recipe (non-private, BatchNorm, AdamW, augmentation) and once with
``dp_epsilon=EPS, lr=1, batch_size=256`` (DP-SGD on every client, GroupNorm; the recipe of
``docs/federated-privacy.md``). Recorded per run: the global test AUC, the accuracy at the run's own operating
point (the threshold chosen on validation), the largest client epsilon, the clients' CPU minutes and the per-round
test AUC. Results are saved after every run to ``bench/results/federated-dp.json``; runs already recorded are
skipped. ``BENCHMARKS.md`` (section ``federated-dp``) is rewritten from it.

With ``--public SPEC`` both federations start from a model trained on that public data set first (``medclass.train
(SPEC, model=M, epochs=P, **{"model.norm": "group"})`` at the federation's image size, once per seed;
``federate(init_from=...)``): the public pretraining that private training leans on. Its head (another task) is
not copied.

Usage:
    OMP_NUM_THREADS=1 python bench/federated_dp.py [--data pneumoniamnist] [--seeds 0 1 2] [--rounds 10] \
        [--local-epochs 2] [--eps 8] [--model smallcnn_tiny] [--public ../shared/data/mednist --public-epochs 5] \
        [--results FILE] [--out DIR]
    python bench/federated_dp.py --merge FILE [FILE ...]   # parallel benches' results files, then render
    python bench/federated_dp.py --render
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "federated-dp.json"
SECTION = "federated-dp"
TARGET = 0.03  # the largest AUC cost of epsilon <= 8 on PneumoniaMNIST IID


def public_run(seed: int, args: argparse.Namespace) -> Path:
    """The model trained on ``args.public`` (GroupNorm, the federation's image size) the federations start from."""
    import medclass

    out = args.out / f"public-{Path(args.public).name}-{args.model}-e{args.public_epochs}-s{seed}"
    if not (out / "metrics.json").is_file():
        medclass.train(
            args.public,
            model=args.model,
            out=out,
            epochs=args.public_epochs,
            seed=seed,
            image_size=args.image_size,
            progress=False,
            **{"model.norm": "group"},
        )
    return out


def one_run(private: bool, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One federation, private or not; its figures."""
    import medclass

    kind = f"dp{args.eps:g}" if private else "plain"
    dp: dict[str, Any] = {"dp_epsilon": args.eps, "lr": 1.0, "batch_size": 256} if private else {}
    if args.public:
        dp["init_from"] = public_run(seed, args)
        kind += f"-init-{Path(args.public).name}{args.public_epochs}"
    t0 = time.perf_counter()
    run = medclass.federate(
        args.data,
        clients=args.clients,
        partition="iid",
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        model=args.model,
        seed=seed,
        baseline=False,
        out=args.out / f"{args.data}-{kind}-e{args.local_epochs}-s{seed}",
        **dp,
    )
    test, fed = run.metrics["splits"]["test"], run.metrics["federated"]
    row = {
        "auc": test["auc"],
        "acc_operating_point": test["operating_point"]["acc"],
        "curve": [r["test_auc"] for r in fed["history"]],
        "cpu_minutes": fed["client_cpu_minutes"],
        "wall_minutes": round((time.perf_counter() - t0) / 60, 2),
    }
    if private:
        row["epsilon"] = fed["privacy"]["epsilon"]
        row["noise_multiplier"] = float(np.mean([c["noise_multiplier"] for c in fed["privacy"]["clients"].values()]))
    return row


def render(saved: dict) -> str:
    """The ``BENCHMARKS.md`` section: one row per setting, the mean over seeds, and the target."""
    lines = [
        "What DP-SGD costs a federation: `medclass federate` on PneumoniaMNIST (28 px), 5 IID clients, FedAvg, the "
        "same seeds with and without `--dp-epsilon`. Non-private: the default recipe (BatchNorm, AdamW, "
        "augmentation). Private: every client runs DP-SGD (GroupNorm, SGD lr 1 with one cosine over the rounds, "
        "momentum 0.5, expected batch 256, clip 1, delta 1e-5, Poisson sampling, RDP accounting per client). ACC is "
        "at the operating point chosen on validation (DP models' probabilities sit far from 0.5). A model named "
        "with an init started both federations from a model trained on that public set first (GroupNorm, its "
        "head not copied: `--init-from`); its cost is given against both non-private references.",
        "",
        "| setting | model | rounds x local epochs | test AUC (mean) | per seed | ACC | epsilon | CPU-min | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, float] = {}
    for key, seeds in saved.get("results", {}).items():
        runs = [r for r in seeds.values() if "auc" in r]
        if not runs:
            continue
        kind, model, schedule = key.split("|")
        auc = float(np.mean([r["auc"] for r in runs]))
        means[key] = auc
        eps = f"{max(r['epsilon'] for r in runs):.2f}" if "epsilon" in runs[0] else "-"
        per = ", ".join(f"{r['auc']:.3f}" for r in runs)
        acc = np.mean([r["acc_operating_point"] for r in runs])
        cpu = np.mean([r["cpu_minutes"] for r in runs])
        lines.append(
            f"| {kind} | {model} | {schedule} | **{auc:.3f}** | {per} | {acc:.3f} | {eps} | {cpu:.1f} | {len(runs)} |"
        )
    lines.append("")
    for key, auc in means.items():
        kind, model, schedule = key.split("|")
        if kind == "plain":
            continue
        # the reference is the best non-private run of the architecture, with a public init or without
        base = model.split(",")[0]
        others = {k: v for k, v in means.items() if k.startswith("plain|") and k.split("|")[1].split(",")[0] == base}
        if not others:
            continue
        best = max(others, key=others.get)
        _, ref_model, ref_schedule = best.split("|")
        ref, against = others[best], f"the best non-private run ({ref_model}, {ref_schedule})"
        if best == f"plain|{model}|{schedule}":
            against = "the same schedule and start without DP, the best non-private run"
        cost = ref - auc
        verdict = "met" if cost <= TARGET else "not met"
        lines.append(
            f"- {kind} ({model}, {schedule}): {auc:.3f} against {ref:.3f} for {against}: costs {cost:.3f} AUC "
            f"(target <= {TARGET}): {verdict}"
        )
    lines += ["", f"Machine: {saved.get('machine', '?')}. Commands:", ""]
    lines += [f"    {c}" for c in saved.get("commands", [])]
    return "\n".join(lines)


def merge(into: dict, other: dict) -> None:
    """Add ``other``'s commands and runs (setting, seed) to ``into`` (runs of ``into`` win unless they failed)."""
    from benchmd import merge_saved

    merge_saved(into, other, depth=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="pneumoniamnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--eps", type=float, default=8.0)
    ap.add_argument("--model", default="smallcnn_tiny")
    ap.add_argument("--public", help="public data set both federations start from (trained first, GroupNorm)")
    ap.add_argument("--public-epochs", type=int, default=5, help="epochs of training on --public")
    ap.add_argument("--image-size", type=int, default=28, help="side of the public images (the federation's)")
    ap.add_argument("--kinds", nargs="+", choices=["plain", "dp"], default=["plain", "dp"])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-federated-dp")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from saved results")
    ap.add_argument("--results", type=Path, default=RESULTS, help="results file (several benches in parallel)")
    ap.add_argument("--merge", type=Path, nargs="+", help="merge these results files into --results, then render")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from benchmd import load_results, update_section

    results = args.results
    saved = load_results(results, args.merge, merge)
    if not args.render and not args.merge:
        command = "OMP_NUM_THREADS=1 python bench/federated_dp.py " + shlex.join(sys.argv[1:])
        saved["commands"] = [*dict.fromkeys([*saved.get("commands", []), command])]
        from machine import cpu_description

        saved["machine"] = (
            f"{cpu_description()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        )
        schedule = f"{args.rounds} x {args.local_epochs}"
        model = args.model + (f", {Path(args.public).name} init ({args.public_epochs} ep)" if args.public else "")
        for seed in args.seeds:
            for kind in args.kinds:
                name = "plain" if kind == "plain" else f"dp eps {args.eps:g}"
                cell = saved["results"].setdefault(f"{name}|{model}|{schedule}", {})
                if str(seed) in cell and "error" not in cell[str(seed)]:
                    continue
                print(f"[federated-dp] {name} {model} {schedule} seed {seed}", flush=True)
                try:
                    cell[str(seed)] = one_run(kind == "dp", seed, args)
                except Exception as err:  # noqa: BLE001 - recorded, the bench goes on
                    cell[str(seed)] = {"error": f"{type(err).__name__}: {err}"}
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text(json.dumps(saved, indent=1) + "\n")
                print(f"[federated-dp]   {json.dumps(cell[str(seed)])[:300]}", flush=True)
    if results.resolve() != RESULTS.resolve():
        print(f"results in {results}; BENCHMARKS.md is written from {RESULTS.name} (--merge {results})")
        return
    update_section(SECTION, "Federated learning with differential privacy", render(saved))


if __name__ == "__main__":
    main()
