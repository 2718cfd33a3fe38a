"""Explanation benchmark: randomisation check and deletion/insertion against random maps, per method.

For each trained run given, it takes the first ``--n`` test images, explains the model's decision
with every method, and reports: the mean Spearman correlation between the trained model's maps
and a randomised model's (Adebayo et al. 2018: below 0.5 passes), and the deletion and insertion
areas (Petsiuk et al. 2018) beside those of uniform random maps (deletion: lower is better;
insertion: higher is better). Writes ``BENCHMARKS.md`` (``explain`` section) and
``bench/results/explain.json``. Run folders are read, never changed.

Usage:
    python bench/explain.py RUN [RUN ...] [--n 32] [--methods gradcam occlusion ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "explain.json"


def measure(run: Path, methods: list[str], n: int) -> dict:
    """Per method: randomisation correlation, deletion/insertion areas for the method and for random maps."""
    import numpy as np

    from medclass.config import config_from_dict, read_yaml
    from medclass.data.sources import load_configured
    from medclass.explain.methods import default_targets, saliency
    from medclass.explain.sanity import deletion_insertion, random_maps, randomisation_check
    from medclass.inference import predict_probs, to_input
    from medclass.predict import Predictor

    cfg = config_from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml"))
    dataset = load_configured(cfg.data)
    predictor = Predictor.from_checkpoint(run)
    images = dataset.splits["test"].images[:n]
    probs = predict_probs(predictor.model, images, predictor.task, predictor.prep, calibration=predictor.calibration)
    targets = default_targets(probs, predictor.task, predictor.threshold)
    x = to_input(images, predictor.prep)
    out = {"dataset": dataset.name, "size": list(images.shape[2:]), "n": len(images), "methods": {}}
    chance = deletion_insertion(predictor.model, predictor.task, x, targets, random_maps(tuple(x[:, 0].shape)))
    for method in methods:
        t0 = time.perf_counter()
        maps = saliency(predictor.model, predictor.task, x, targets, method)
        seconds = time.perf_counter() - t0
        check = randomisation_check(predictor.model, predictor.task, x, targets, method)
        curves = deletion_insertion(predictor.model, predictor.task, x, targets, maps)
        out["methods"][method] = {
            "spearman": check["mean"],
            "randomisation_passed": check["passed"],
            "deletion": float(np.mean(curves["deletion_auc"])),
            "insertion": float(np.mean(curves["insertion_auc"])),
            "deletion_random": float(np.mean(chance["deletion_auc"])),
            "insertion_random": float(np.mean(chance["insertion_auc"])),
            "ms_per_image": 1000 * seconds / len(images),
        }
        print(run.name, method, json.dumps({k: round(v, 3) for k, v in out["methods"][method].items()}), flush=True)
    return out


def render(results: dict, command: str) -> str:
    lines = [
        f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} cores). First test images of each run, the "
        "model's own decision explained. Randomisation: mean Spearman correlation of the trained and a "
        "re-initialised model's maps (passes below 0.5). Deletion/insertion: mean area under the target "
        "probability as the top-ranked pixels are removed / restored, beside uniform random maps.",
        "",
        "| run | data | method | Spearman vs random weights | passes | deletion (random) | insertion (random) "
        "| ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, r in results.items():
        for method, m in r["methods"].items():
            size = "x".join(map(str, r["size"]))
            lines.append(
                f"| {Path(run).name} | {r['dataset']} {size} px, n={r['n']} | {method} | {m['spearman']:.2f} | "
                f"{'yes' if m['randomisation_passed'] else 'no'} | {m['deletion']:.3f} ({m['deletion_random']:.3f}) | "
                f"{m['insertion']:.3f} ({m['insertion_random']:.3f}) | {m['ms_per_image']:.0f} |"
            )
    return "\n".join(lines + [""])


def main() -> None:
    from medclass.explain.methods import METHODS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=32, help="test images per run")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = ap.parse_args()
    command = "python bench/explain.py " + " ".join(sys.argv[1:])
    results = {str(run): measure(run, args.methods, args.n) for run in args.runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command, "results": results}, indent=2))
    update_section("explain", "Explanations: sanity and faithfulness checks", render(results, command))


if __name__ == "__main__":
    main()
