"""Scaling: data-parallel training on this CPU, and the memory of training on a set larger than memory.

Three measurements, each saved to ``bench/results/scaling.json`` as it finishes and rendered into
``BENCHMARKS.md`` (section ``scaling``):

* ``throughput``: strong scaling at a fixed global batch (128) on PneumoniaMNIST, ``--epochs`` epochs of the
  default recipe: 1 process x 2 threads against 2 processes x 1 thread (``medclass train --nproc 2``); training
  images per second from ``history.csv`` (epochs after the first), and efficiency = throughput(2 processes) /
  (2 x throughput(1 process x 1 thread)), the 1 x 1 run measured too;
* ``accuracy``: the default command's full schedule in one process and in two, same global batch and seed:
  test AUC and ACC side by side;
* ``memory``: a synthetic folder of ``--images`` RGB images at 224 px (3 GB of pixels for 20,000), decoded into
  both caches first; then one training epoch (``train.max_minutes`` caps it) under ``data.mmap: always`` and
  ``never``, each in a fresh process whose data segment is limited to ``--limit-gb`` (``RLIMIT_DATA``; file
  mappings do not count against it): peak resident memory (``VmHWM``) and peak anonymous memory, or the error.

Usage:
    python bench/scaling.py [--parts throughput accuracy memory] [--epochs 3] [--images 20000]
    python bench/scaling.py --render
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "scaling.json"
DATA = "pneumoniamnist"
SECTION = "scaling"


def _train(out: Path, nproc: int, threads: int, extra: list[str], env: dict | None = None) -> dict:
    """``medclass train`` in a fresh process (or ``nproc`` of them); its history and metrics, or its error."""
    cmd = [sys.executable, "-m", "medclass", "train", "--data", DATA, "--out", str(out), "-q", *extra]
    cmd += ["--set", f"train.threads={threads}"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    run_env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    load = os.getloadavg()[0]  # other work on the machine during the run: the figures are only as clean as this
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=run_env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    rows = (out / "history.csv").read_text().splitlines()
    head = rows[0].split(",")
    seconds = [float(r.split(",")[head.index("seconds")]) for r in rows[1:]]
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["splits"]["test"]
    return {
        "epoch_seconds": seconds,
        "wall_seconds": round(wall, 1),
        "test_auc": test["auc"],
        "test_acc": test["acc"],
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def throughput(args: argparse.Namespace, work: Path, saved: dict) -> None:
    """Strong scaling at global batch 128: 1x1, 1x2 and 2x1 (processes x threads)."""
    import numpy as np

    from medclass.data.sources import load_dataset

    n = len(load_dataset(DATA).splits["train"])
    extra = ["--epochs", str(args.epochs), "--set", "train.min_steps=0", "--set", "train.precision=fp32"]
    out = saved.setdefault("throughput", {"epochs": args.epochs, "train_images": n})
    for nproc, threads in ((1, 1), (1, 2), (2, 1)):
        key = f"{nproc}x{threads}"
        if key in out:
            continue
        row = _train(work / f"tp-{key}", nproc, threads, extra)
        if "epoch_seconds" in row:
            row["images_per_s"] = round(n / float(np.mean(row["epoch_seconds"][1:] or row["epoch_seconds"])), 1)
        out[key] = row
        _save(saved)


def accuracy(args: argparse.Namespace, work: Path, saved: dict) -> None:
    """The default command (its full schedule, or ``--accuracy-epochs``), one process (2 threads) against two, per seed.

    Rows are keyed ``"<processes>x<threads> seed <s>"`` (the saved results also keep one two-process run made
    before batch norm was synchronised on CPU ranks, under a key that says so).
    """
    out = saved.setdefault("accuracy", {})
    out["epochs"] = args.accuracy_epochs
    for seed in args.accuracy_seeds:
        extra = ["--seed", str(seed)] + (["--epochs", str(args.accuracy_epochs)] if args.accuracy_epochs else [])
        for nproc, threads in ((1, 2), (2, 1)):
            key = f"{nproc}x{threads} seed {seed}"
            if key not in out:
                out[key] = _train(work / f"acc-{nproc}x{threads}-s{seed}-e{args.accuracy_epochs or 'all'}", nproc,
                                  threads, extra)  # fmt: skip
                _save(saved)


CHILD = """
import json, re, resource, sys, threading, time
from pathlib import Path
limit = int(sys.argv[3])
status = lambda: open("/proc/self/status").read()
used = int(re.search(r"VmData:\\s+(\\d+)", status()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (used + limit, resource.RLIM_INFINITY))
peak = [0]
def watch():
    while True:
        peak[0] = max(peak[0], int(re.search(r"RssAnon:\\s+(\\d+)", status()).group(1)))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
import medclass
row = {}
try:
    run = medclass.train(sys.argv[1], out=sys.argv[2], progress=False, image_size=224, epochs=1, seed=0,
                         batch_size=int(sys.argv[5]),
                         **{"data.mmap": sys.argv[4], "train.min_steps": 0, "train.max_minutes": 3.0,
                            "train.threads": 2, "eval.n_bootstrap": 10})
    row["test_auc"] = run.metrics["splits"]["test"]["auc"]
except (MemoryError, RuntimeError) as err:
    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
row["peak_rss_mb"] = int(re.search(r"VmHWM:\\s+(\\d+)", status()).group(1)) // 1024
row["peak_anon_mb"] = peak[0] // 1024
print(json.dumps(row))
"""


def _synthetic_folder(root: Path, n: int) -> None:
    """``n`` RGB 224 px PNGs in two class folders: smooth ramps, each unique (a few bytes differ)."""
    import numpy as np
    from PIL import Image

    if (root / "done").is_file():
        return
    ramp = np.linspace(0, 1, 224)[None, :] * np.linspace(0, 1, 224)[:, None]
    for i in range(n):
        label = i % 2
        grey = (ramp * (150 + 80 * label) + (i % 40)).clip(0, 255).astype(np.uint8)
        rgb = np.stack([grey, np.roll(grey, i % 224, 1), 255 - grey], -1)
        rgb[0, 0] = (i % 256, (i // 256) % 256, i // 65536)
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"{i:06d}.png", compress_level=1)
    (root / "done").write_text("ok")


def memory(args: argparse.Namespace, work: Path, saved: dict) -> None:
    """Peak memory of one training epoch on a folder larger than the limit, mapped and held."""
    from medclass.data.sources import load_dataset

    folder = work / f"rgb224-{args.images}"
    _synthetic_folder(folder, args.images)
    out = saved.setdefault("memory", {"images": args.images, "limit_gb": args.limit_gb, "batch_size": args.batch_size})
    for mode in ("always", "never"):
        load_dataset(str(folder), image_size=224, mmap=mode)  # decode the cache outside the limit
    for mode in ("always", "never"):
        if mode in out:
            continue
        limit = str(int(args.limit_gb * (1 << 30)))
        cmd = [sys.executable, "-c", CHILD, str(folder), str(work / f"mem-{mode}"), limit, mode, str(args.batch_size)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "2"}
        )
        lines = done.stdout.strip().splitlines()
        out[mode] = json.loads(lines[-1]) if lines else {"error": done.stderr.strip().splitlines()[-1]}
        _save(saved)


def _save(saved: dict) -> None:
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


def render(saved: dict) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        f"Commands: {' then '.join(f'`{c}`' for c in saved.get('commands', []))} ({saved.get('machine', '')}).",
        "",
    ]
    tp = saved.get("throughput")
    if tp:
        lines += [
            f"Strong scaling, PneumoniaMNIST ({tp['train_images']} training images), global batch 128, "
            f"{tp['epochs']} epochs of the default recipe in fp32, training images per second (epochs after the "
            "first):",
            "",
            "| processes x threads | images/s | efficiency | load average before / after |",
            "|---|---|---|---|",
        ]
        base = tp.get("1x1", {}).get("images_per_s")
        for key in ("1x1", "1x2", "2x1"):
            row = tp.get(key, {})
            rate = row.get("images_per_s")
            p, t = (int(v) for v in key.split("x"))
            eff = f"{rate / (p * t * base):.2f}" if rate and base else ""
            load = f"{row['load_before']} / {row['load_after']}" if "load_before" in row else ""
            lines.append(f"| {key} | {rate if rate else row.get('error', '')} | {eff} | {load} |")
        lines += ["", "Efficiency: throughput / (processes x threads x throughput of 1 x 1).", ""]
        if tp.get("note"):
            lines += [tp["note"], ""]
    acc = saved.get("accuracy")
    if acc:
        sched = (
            f"{acc['epochs']} epochs of the default command"
            if acc.get("epochs")
            else "The default command's full schedule"
        )
        lines += [f"{sched}, same seed and global batch (wall minutes: other benches shared the machine):", "",
                  "| processes x threads, seed | test AUC | test ACC | wall min |", "|---|---|---|---|"]  # fmt: skip
        for key, row in acc.items():
            if key == "epochs":
                continue
            if "error" in row:
                lines.append(f"| {key} | {row['error']} | | |")
            else:
                lines.append(
                    f"| {key} | {row['test_auc']:.4f} | {row['test_acc']:.4f} | {row['wall_seconds'] / 60:.1f} |"
                )
        gaps = [
            abs(acc[f"2x1 seed {s}"]["test_auc"] - acc[f"1x2 seed {s}"]["test_auc"])
            for s in range(10)
            if "test_auc" in acc.get(f"2x1 seed {s}", {}) and "test_auc" in acc.get(f"1x2 seed {s}", {})
        ]
        if gaps:
            mean = sum(gaps) / len(gaps)
            lines += ["", f"Test AUC gap, 2 processes against 1 (synchronised batch norm), {len(gaps)} seed(s): "
                      f"{', '.join(f'{g:.4f}' for g in gaps)}; mean {mean:.4f} (target <= 0.003: "
                      f"{'met' if mean <= 0.003 else 'not met'})."]  # fmt: skip
        lines.append("")
    mem = saved.get("memory")
    if mem:
        gb = mem["images"] * 3 * 224 * 224 / 2**30
        lines += [
            f"Memory: one training epoch (3 min at most, batch {mem.get('batch_size', 128)}) on {mem['images']:,} RGB "
            f"images at 224 px ({gb:.1f} GiB of pixels), each process's data segment limited to {mem['limit_gb']} GiB "
            "over what it used at start:",
            "",
            "| data.mmap | peak resident MB (VmHWM) | peak anonymous MB | outcome |",
            "|---|---|---|---|",
        ]
        for mode in ("always", "never"):
            row = mem.get(mode, {})
            outcome = row.get("error") or (f"trained (test AUC {row['test_auc']:.3f})" if "test_auc" in row else "")
            lines.append(f"| {mode} | {row.get('peak_rss_mb', '')} | {row.get('peak_anon_mb', '')} | {outcome} |")
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    if start not in doc:
        doc += f"\n## Scaling: several processes, sets larger than memory\n\n{start}\n{end}\n"
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--parts", nargs="+", choices=["throughput", "accuracy", "memory"], default=["throughput", "accuracy", "memory"]
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=32, help="training batch of the memory part")
    ap.add_argument("--accuracy-epochs", type=int, help="epochs of the accuracy part (default: the full schedule)")
    ap.add_argument("--accuracy-seeds", type=int, nargs="+", default=[0], help="seeds of the accuracy part")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medclass-scaling")
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.render:
        command = "python bench/scaling.py " + " ".join(sys.argv[1:])
        saved["commands"] = [*dict.fromkeys([*saved.get("commands", []), command])]
        saved["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
        args.work.mkdir(parents=True, exist_ok=True)
        for part in args.parts:
            print(f"[scaling] {part}", flush=True)
            {"throughput": throughput, "accuracy": accuracy, "memory": memory}[part](args, args.work, saved)
    write_section(render(saved))


if __name__ == "__main__":
    main()
