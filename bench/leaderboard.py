"""Leaderboard: every architecture family on the same data, seeds and CPU budget.

For each dataset and model, ``medclass train --data D --model M --recipe default --seed S`` with
``train.max_minutes`` as the per-run budget, the image size each model needs (``--image-size``,
resized from the dataset's own), then the test AUC/ACC, parameters, training minutes and
single-process inference images/s. Results are saved after every run (``bench/results/
leaderboard.json``), runs already recorded are skipped, and ``BENCHMARKS.md`` gets the table
(``leaderboard`` section), beside the MedMNIST v2 rows and MedMNIST+'s best 28 px accuracies.

Usage:
    python bench/leaderboard.py [--datasets pneumoniamnist breastmnist] [--models smallcnn capsnet ...]
        [--seeds 0 1 2] [--minutes 15]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from runs import mean_sd, train_and_read  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "leaderboard.json"
MODELS = (
    "smallcnn",
    "shallow_cnn",
    "resnet18_28",
    "resnet50_28",
    "vgg11_bn",
    "vgg16_bn",
    "densenet121",
    "inception_v3",
    "efficientnet_b0",
    "convnext_atto",
    "vit_tiny",
    "vit_small",
    "hybrid_cnn_vit",
    "capsnet",
    "capsnet_sa",
    "classical/hog-svm",
    "classical/lbp-svm",
    "classical/sift-bovw-svm",
    "classical/orb-bovw-svm",
)
MEDMNIST_PLUS_28 = {"pneumoniamnist": 0.866, "breastmnist": 0.865}  # best 28 px ACC (Doerrich et al. 2024)


def image_size(model: str, native: int) -> int:
    """The input side a model is trained at: the data's own, or the model's minimum when larger."""
    if model.startswith("classical/"):
        return native
    from medclass.models import model_info

    return max(native, model_info(model).min_size)


def inference_rate(run: Path, images: object, repeats: int = 3) -> float:
    """Images/s of ``Predictor.predict_array`` on a test batch (best of ``repeats``)."""
    from medclass.predict import Predictor

    pred = Predictor.from_checkpoint(run)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred.predict_array(images)
        best = max(best, len(images) / (time.perf_counter() - t0))
    return best


def render(results: dict, command: str) -> str:
    from medclass.evaluate import reference_rows

    lines = [
        f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} cores). Test split, mean ± sd over seeds; the "
        "default recipe with each model, stopped at the per-run time budget.",
        "",
    ]
    for dataset, models in results.items():
        lines += [f"### {dataset}", "", "| model | seeds | test AUC | test ACC | params | train min | infer img/s |"]
        lines.append("|---|---|---|---|---|---|---|")
        for r in reference_rows(dataset):
            lines.append(f"| {r['method']} (MedMNIST v2) | | {r['auc']:.3f} | {r['acc']:.3f} | | | |")
        if dataset in MEDMNIST_PLUS_28:
            lines.append(f"| best 28 px (MedMNIST+) | | | {MEDMNIST_PLUS_28[dataset]:.3f} | | | |")
        for model, runs in models.items():
            rs = list(runs.values())
            lines.append(
                f"| {model} | {len(rs)} | {mean_sd([r['auc'] for r in rs])} | {mean_sd([r['acc'] for r in rs])} | "
                f"{rs[0]['params']:,} | {statistics.mean(r['minutes'] for r in rs):.1f} | "
                f"{statistics.mean(r['img_s'] for r in rs):.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per run")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-leaderboard"))
    args = ap.parse_args()
    command = "python bench/leaderboard.py " + " ".join(sys.argv[1:])
    from medclass.data.sources import load_dataset

    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict = saved.get("results", {})
    for dataset in args.datasets:
        data = load_dataset(dataset)
        native = int(data.sample_shape[-1])
        test_images = data.splits["test"].images[:256].numpy()
        for model in args.models:
            for seed in args.seeds:
                runs = results.setdefault(dataset, {}).setdefault(model, {})
                if str(seed) in runs:
                    continue
                size = image_size(model, native)
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                    fh.write(f"train:\n  max_minutes: {args.minutes}\n")
                try:
                    out = Path(args.out) / f"{dataset}-{model.replace('/', '_')}-s{seed}"
                    cli = ["--data", dataset, "--model", model, "--recipe", "default", "--seed", str(seed)]
                    cli += ["--config", fh.name] + (["--image-size", str(size)] if size != native else [])
                    row = train_and_read(cli, out)
                finally:
                    os.unlink(fh.name)
                row["img_s"] = inference_rate(out, test_images)
                runs[str(seed)] = row
                print(dataset, model, seed, json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps({"results": results, "command": command}, indent=2))
                update_section("leaderboard", "Leaderboard: architectures side by side", render(results, command))


if __name__ == "__main__":
    main()
