"""Ablation benchmark: augmentation, class-imbalance and transfer options against a no-augmentation baseline.

Each variant is the ``default`` recipe with a few keys overridden (see :data:`VARIANTS`), trained
through the CLI on each dataset for each seed; test AUC/ACC mean and sd, parameters and training
minutes go into ``BENCHMARKS.md`` (between the ``ablation`` markers) and
``bench/results/ablation.json``. Results are saved after every run, so an interrupted benchmark
keeps what it measured, and runs already recorded are skipped (``--force`` repeats them). Each save
re-reads the file and adds its run, so several processes (say one per core, with
``OMP_NUM_THREADS=1`` and different ``--variants``) can fill the grid side by side; the table's
command is the one that reproduces every run recorded, and it states the threads each run had.

Transfer variants start from a source run: the default model trained on MedNIST (six classes of
radiology images, resized to 28 px) for ``--source-epochs`` epochs, made once and reused
(medical-to-medical transfer; ImageNet weights need a download this benchmark does not assume).

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
from medclass.utils.files import write_json  # noqa: E402
from runs import mean_sd, train_and_read  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ablation.json"
SOURCE = "<source run>"
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
    "clahe": ("default + CLAHE preprocessing (clip 2, 2x2 regions)", {"data": {"equalize": "clahe", "clahe_tiles": 2}}),
    "finetune": ("transfer from MedNIST: full fine-tune", {"model": {"init_from": SOURCE}}),
    "probe": ("transfer from MedNIST: linear probe", {"model": {"init_from": SOURCE, "freeze": "backbone"}}),
    "gradual": (
        "transfer from MedNIST: gradual unfreezing (a layer every 2 epochs)",
        {"model": {"init_from": SOURCE, "freeze": "gradual", "unfreeze_every": 2}},
    ),
    "layer_decay": (
        "transfer from MedNIST: layer-wise lr decay 0.5",
        {"model": {"init_from": SOURCE}, "optim": {"layer_decay": 0.5}},
    ),
    "truncate": (
        "transfer from MedNIST: last stage truncated, fine-tuned",
        {"model": {"init_from": SOURCE, "truncate": 1}},
    ),
}


def source_run(out_root: Path, spec: str, epochs: int) -> Path:
    """The MedNIST run transfer variants start from; trained once (28 px, default recipe)."""
    out = out_root / f"source-mednist-e{epochs}"
    if (out / "model.safetensors").is_file() and (out / "metrics.json").is_file():
        return out
    code = cli_main(
        ["train", "--data", spec, "--recipe", "default", "--image-size", "28", "--epochs", str(epochs)]
        + ["--out", str(out), "--quiet"]
    )
    if code != 0:
        raise SystemExit(f"source run on {spec} failed with exit code {code}")
    return out


def _resolve(overrides: dict, source: Path | None) -> dict:
    """``overrides`` with the :data:`SOURCE` placeholder replaced by the source run's folder."""
    model = overrides.get("model", {})
    if model.get("init_from") != SOURCE:
        return overrides
    if source is None:
        raise SystemExit("transfer variants need a source run (--source)")
    return {**overrides, "model": {**model, "init_from": str(source)}}


def run_one(dataset: str, variant: str, seed: int, out_root: Path, source: Path | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(_resolve(VARIANTS[variant][1], source), fh)
    try:
        args = ["--data", dataset, "--recipe", "default", "--config", fh.name, "--seed", str(seed)]
        return train_and_read(args, out_root / f"{dataset}-{variant}-s{seed}", reuse=False)
    finally:
        os.unlink(fh.name)


def _params(runs: list[dict]) -> str:
    counts = {r["params"] for r in runs if "params" in r}
    return f"{counts.pop():,}" if len(counts) == 1 else "-"


def full_command(results: dict) -> str:
    """The command that reproduces every run in ``results`` (its datasets, variants and seeds)."""
    variants = {v for runs in results.values() for v in runs}
    seeds = sorted({int(s) for runs in results.values() for by_seed in runs.values() for s in by_seed})
    return (
        f"python bench/ablation.py --datasets {' '.join(results)} "
        f"--variants {' '.join(v for v in VARIANTS if v in variants)} --seeds {' '.join(map(str, seeds))}"
    )


def render(results: dict) -> str:
    rows = [r for runs in results.values() for by_seed in runs.values() for r in by_seed.values()]
    threads = sorted({r.get("threads") for r in rows}, key=str)
    where = ", ".join("threads not recorded" if t is None else f"{t} thread(s) per run" for t in threads)
    lines = [
        f"Command: `{full_command(results)}` ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{where}); test split, mean ± sd over seeds; each variant is the `default` recipe with the keys in "
        "`bench/ablation.py` changed. With one thread and another run on the other core, training minutes are "
        "about 2.4x those of one run on a free 2-core machine.",
        "",
        "| dataset | variant | seeds | test AUC | test ACC | params | train min |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, variants in results.items():
        for variant, runs in variants.items():
            rs = list(runs.values())
            lines.append(
                f"| {dataset} | {VARIANTS[variant][0]} | {len(rs)} | {mean_sd([r['auc'] for r in rs])} | "
                f"{mean_sd([r['acc'] for r in rs])} | {_params(rs)} | {statistics.mean(r['minutes'] for r in rs):.1f} |"
            )
    return "\n".join(lines + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-ablation"))
    ap.add_argument("--force", action="store_true", help="repeat runs already recorded")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "mednist"), help="source data")
    ap.add_argument("--source-epochs", type=int, default=2, help="epochs of the MedNIST source run")
    args = ap.parse_args()
    import torch

    for dataset in args.datasets:
        for variant in args.variants:
            for seed in args.seeds:
                if str(seed) in _saved().get(dataset, {}).get(variant, {}) and not args.force:
                    continue
                t0 = time.perf_counter()
                needs_source = VARIANTS[variant][1].get("model", {}).get("init_from") == SOURCE
                source = source_run(Path(args.out), args.source, args.source_epochs) if needs_source else None
                row = run_one(dataset, variant, seed, Path(args.out), source) | {"threads": torch.get_num_threads()}
                print(f"{dataset} {variant} seed {seed}: {row} ({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
                results = _saved()  # re-read: another process may have added runs meanwhile
                results.setdefault(dataset, {}).setdefault(variant, {})[str(seed)] = row
                write_json(RESULTS, {"results": results, "command": full_command(results)})
                update_section("ablation", "Ablation: augmentation and class imbalance (28 px)", render(results))


def _saved() -> dict:
    return json.loads(RESULTS.read_text()).get("results", {}) if RESULTS.exists() else {}


if __name__ == "__main__":
    main()
