"""Post-hoc decision changes on finished multi-class runs: TTA views, vector scaling, a probability average.

Re-evaluates saved checkpoints on the validation and test splits without training again. It is how the
``post hoc`` rows of the HAM10000 candidates in ``bench/results/multiclass.json`` (``_decision``) were made:

* ``--tta shift hflip vflip``: the first run's logits averaged over those views;
* ``--vector``: vector scaling (per-class scale and bias) fitted on validation logits, with the validation
  ACC also cross-fitted (fitted on one random half, scored on the other, 5 halvings) so that it is not
  in-sample;
* two or more runs: the average of their softmax probabilities, each run with its own TTA.

Usage:
    MEDCLASS_DATA_DIR=../shared/data/medmnist python bench/multiclass_posthoc.py RUN [RUN ...] \
        --data ../shared/data/ham10000/labels.csv --image-size 28 [--tta shift hflip vflip] [--vector]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from medclass.checkpoint import load_model  # noqa: E402
from medclass.data.sources import load_dataset  # noqa: E402
from medclass.inference import predict_logits  # noqa: E402
from medclass.metrics.classification import balanced_accuracy  # noqa: E402
from medclass.metrics.medmnist import acc, auc  # noqa: E402
from medclass.trust.scaling import apply_calibration, fit_calibration  # noqa: E402

SPLITS = ("val", "test")


def split_logits(run: str, images: dict[str, torch.Tensor], tta: list[str] | None) -> dict[str, torch.Tensor]:
    """``(N, C)`` float64 logits per split of a run's checkpoint; ``tta`` replaces its views when given."""
    model, meta = load_model(run)
    prep = dict(meta["preprocessing"])
    if tta is not None:
        prep["tta"] = tta
    return {s: predict_logits(model, images[s], prep).double() for s in SPLITS}


def scores(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Macro one-vs-rest AUC, ACC and balanced accuracy per split, from ``(N, C)`` probabilities."""
    out = {}
    for s in SPLITS:
        pred = probs[s].argmax(1)
        out[s] = {
            "auc": round(auc(labels[s], probs[s], "multiclass"), 4),
            "acc": round(acc(labels[s], probs[s], "multiclass"), 4),
            "balanced_accuracy": round(balanced_accuracy(labels[s], pred, num_classes=probs[s].shape[1]), 4),
        }
    return out


def scaled(fit_z: torch.Tensor, fit_y: np.ndarray, z: torch.Tensor) -> torch.Tensor:
    """``z`` under the vector scaling fitted on ``(fit_z, fit_y)`` (``eval.calibration: vector``)."""
    return apply_calibration(z, fit_calibration(fit_z, fit_y, "multiclass", "vector"))


def crossfit_acc(z: torch.Tensor, y: np.ndarray, halvings: int = 5, seed: int = 0) -> float:
    """Validation ACC of vector scaling fitted on one random half of ``(z, y)`` and scored on the other."""
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(halvings):
        idx = rng.permutation(len(y))
        a, b = idx[: len(y) // 2], idx[len(y) // 2 :]
        for fit, score in ((a, b), (b, a)):
            accs.append(acc(y[score], scaled(z[fit], y[fit], z[score]).numpy(), "multiclass"))
    return round(float(np.mean(accs)), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (two or more: their probability average)")
    parser.add_argument("--data", required=True, help="the runs' data spec")
    parser.add_argument("--image-size", type=int, help="the runs' image size")
    parser.add_argument("--tta", nargs="*", choices=["shift", "hflip", "vflip"], help="TTA views instead of the runs'")
    parser.add_argument("--vector", action="store_true", help="vector scaling fitted on validation (one run)")
    args = parser.parse_args(argv)
    if args.vector and len(args.runs) > 1:
        parser.error("--vector scales one run's logits: give one run")
    torch.set_num_threads(1)
    ds = load_dataset(args.data, image_size=args.image_size)
    images = {s: ds.splits[s].images for s in SPLITS}
    labels = {s: np.asarray(ds.splits[s].labels).reshape(-1) for s in SPLITS}
    logits = [split_logits(run, images, args.tta) for run in args.runs]
    row: dict = {"runs": args.runs, "tta": args.tta}
    if args.vector:
        z = logits[0]
        row["val_acc_crossfit"] = crossfit_acc(z["val"], labels["val"])
        logits[0] = {s: scaled(z["val"], labels["val"], z[s]) for s in SPLITS}
    probs = {s: np.mean([torch.softmax(z[s], 1).numpy() for z in logits], axis=0) for s in SPLITS}
    row.update(scores(probs, labels))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
