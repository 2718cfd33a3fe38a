"""Ablation benchmark: the effect of augmentation, imbalance and mixing options against a no-augmentation baseline.

Each variant is the ``default`` recipe with a few keys overridden (see :data:`VARIANTS`), trained
through the CLI on each dataset for each seed; test AUC/ACC mean and sd and training minutes go
into ``BENCHMARKS.md`` (between the ``ablation`` markers) and ``bench/results/ablation.json``.
Results are saved after every run, so an interrupted benchmark keeps what it measured, and runs
already recorded are skipped (``--force`` repeats them).

Usage:
    python bench/ablation.py [--datasets breastmnist pneumoniamnist] [--variants none default ...] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from medclass.cli import main as cli_main  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ablation.json"
_NO_AUG = {"augment": {"enabled": False}, "optim": {"class_weight": None}}
VARIANTS: dict[str, tuple[str, dict]] = {
    "none": ("no augmentation, plain cross-entropy (baseline)", _NO_AUG),
    "spatial": (
        "spatial only (affine)",
        {"optim": {"class_weight": None}, "augment": {"brightness": 0, "contrast": 0}},
    ),
    "default": ("default recipe: spatial + intensity, class-weighted loss", {}),
    "trivial": ("TrivialAugment policy instead of the hand-set augmentation", {"augment": {"policy": "trivial"}}),
    "noise": (
        "default + noise (Gaussian 0.05, speckle 0.1, blur 0.5)",
        {"augment": {"noise": 0.05, "speckle": 0.1, "blur": 0.5}},
    ),
    "mixing": ("default + mixup 0.2 / cutmix 1.0", {"augment": {"mixup": 0.2, "cutmix": 1.0}}),
    "focal": (
        "default, focal loss (gamma 2) instead of class weights",
        {"optim": {"loss": "focal", "class_weight": None}},
    ),
    "balanced": (
        "default, balanced sampling instead of class weights",
        {"optim": {"class_weight": None}, "train": {"sampler": "balanced"}},
    ),
    "logit_adjust": (
        "default, logit adjustment (tau 1) instead of class weights",
        {"optim": {"logit_adjust": 1.0, "class_weight": None}},
    ),
    "tta": ("default + test-time augmentation (shift)", {"eval": {"tta": ["shift"]}}),
}


def run_one(dataset: str, variant: str, seed: int, out_root: Path) -> dict:
    out = out_root / f"{dataset}-{variant}-s{seed}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(VARIANTS[variant][1], fh)
    try:
        code = cli_main(
            ["train", "--data", dataset, "--recipe", "default", "--config", fh.name, "--seed", str(seed)]
            + ["--out", str(out), "--quiet"]
        )
    finally:
        os.unlink(fh.name)
    if code != 0:
        raise SystemExit(f"{dataset} {variant} seed {seed} failed with exit code {code}")
    test = json.loads((out / "metrics.json").read_text())["splits"]["test"]
    hist = (out / "history.csv").read_text().splitlines()
    col = hist[0].split(",").index("seconds")
    minutes = sum(float(r.split(",")[col]) for r in hist[1:]) / 60
    return {"auc": test["auc"], "acc": test["acc"], "minutes": minutes}


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def render(results: dict, command: str) -> str:
    lines = [
        f"Command: `{command}` ({platform.processor() or platform.machine()}, {os.cpu_count()} cores); "
        "test split, mean ± sd over seeds; each variant is the `default` recipe with the keys in "
        "`bench/ablation.py` changed.",
        "",
        "| dataset | variant | seeds | test AUC | test ACC | train min |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, variants in results.items():
        for variant, runs in variants.items():
            rs = list(runs.values())
            lines.append(
                f"| {dataset} | {VARIANTS[variant][0]} | {len(rs)} | {_ms([r['auc'] for r in rs])} | "
                f"{_ms([r['acc'] for r in rs])} | {statistics.mean(r['minutes'] for r in rs):.1f} |"
            )
    return "\n".join(lines + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-ablation"))
    ap.add_argument("--force", action="store_true", help="repeat runs already recorded")
    args = ap.parse_args()
    command = "python bench/ablation.py " + " ".join(sys.argv[1:])
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict = saved.get("results", {})
    for dataset in args.datasets:
        for variant in args.variants:
            for seed in args.seeds:
                runs = results.setdefault(dataset, {}).setdefault(variant, {})
                if str(seed) in runs and not args.force:
                    continue
                t0 = time.perf_counter()
                runs[str(seed)] = run_one(dataset, variant, seed, Path(args.out))
                print(f"{dataset} {variant} seed {seed}: {runs[str(seed)]} ({(time.perf_counter() - t0) / 60:.1f} min)")
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps({"results": results, "command": command.strip()}, indent=2))
                update_section(
                    "ablation", "Ablation: augmentation and class imbalance (28 px)", render(results, command.strip())
                )


if __name__ == "__main__":
    main()
