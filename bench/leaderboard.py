"""Leaderboard: every architecture family on the same data, seeds and CPU budget.

For each dataset and model, ``medclass train --data D --model M --recipe default --seed S`` with
``train.max_minutes`` as the per-run budget, the image size each model needs (``--image-size``,
resized from the dataset's own), then the test AUC/ACC, parameters, training minutes and
inference images/s. Results are saved after every run (``bench/results/leaderboard-<dataset>.json``,
so one process per dataset can run side by side), runs already recorded are skipped, and
``BENCHMARKS.md`` gets the table (``leaderboard`` section) of every dataset recorded, beside the
MedMNIST v2 rows and MedMNIST+'s best 28 px accuracies.

``mednist64`` is the MedNIST folder under ``--data`` at 64 px: byte-identical duplicates dropped, then a
seeded 90/5/5 train/val/test split. The 5% test split (about 2,900 images, 480 per class) keeps one
evaluation of the largest models inside minutes on one core while the AUC stays precise to about 0.001;
the default 20% would spend four times as long re-measuring a near-ceiling AUC.
Threads follow ``OMP_NUM_THREADS``; the table states the count used.

Usage:
    OMP_NUM_THREADS=1 python bench/leaderboard.py [--datasets pneumoniamnist breastmnist mednist64]
        [--models smallcnn capsnet ...] [--seeds 0 1 2] [--minutes 1.5]
    OMP_NUM_THREADS=1 python bench/leaderboard.py --minutes 0 --seeds 0   # no budget: the full schedule
    python bench/leaderboard.py --datasets ... --inference-only   # inference again, this process's threads
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

RESULTS = ROOT / "bench" / "results"
# name: (folder under --data, image size, val and test fractions of the seeded split)
FOLDERS = {"mednist64": ("mednist", 64, 0.05, 0.05)}
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


def _reference_lines(dataset: str, columns: int) -> list[str]:
    from medclass.evaluate import reference_rows

    blank = " |" * (columns - 4)
    rows = reference_rows(dataset)
    lines = [f"| {r['method']} (MedMNIST v2) | | {r['auc']:.3f} | {r['acc']:.3f} |{blank}" for r in rows]
    if dataset in MEDMNIST_PLUS_28:
        lines.append(f"| best 28 px (MedMNIST+) | | | {MEDMNIST_PLUS_28[dataset]:.3f} |{blank}")
    return lines


def render(saved: dict[str, dict], *, mode: str = "budget") -> str:
    """Markdown: one table per dataset recorded in ``saved`` (dataset: {"command", "threads", "results"}).

    ``mode`` is ``budget`` (CPU, ``--minutes`` per run), ``full`` (CPU, no budget: ``--minutes 0``) or
    ``gpu`` (no budget, no CPU inference column; its minutes are GPU training minutes).
    """
    gpu = mode == "gpu"
    if mode == "full":
        head = (
            "**What this table measures: the accuracy each architecture reaches when trained to the end of the default "
            "recipe's schedule on the CPU** (12 epochs and at least 1,000 steps of 64 images; no time budget). "
            f"{platform.machine()}, {os.cpu_count()} cores, one thread per run. Test split; CPU training minutes; "
            "inference as in the budget table."
        )
        columns = ["model", "seeds", "test AUC", "test ACC", "params", "CPU train min", "infer img/s"]
    elif gpu:
        head = (
            "Each model trained with the default recipe's full schedule (no time budget) on one GPU, "
            "several runs side by side: the accuracy each architecture reaches when compute is not the limit."
        )
        columns = ["model", "seeds", "test AUC", "test ACC", "params", "GPU train min"]
    else:
        head = (
            "**What this table measures: the accuracy each model reaches within a fixed CPU time budget per run** "
            "(the command's `--minutes`), not the accuracy the architecture can reach: a large model gets only a few "
            "epochs, so a low row says the model is slow to train on this CPU, not that it does not work (the "
            "leaderboard without a budget trains every model to the end of its schedule). "
            f"{platform.machine()}, {os.cpu_count()} cores. Test split, mean ± sd over seeds; the default recipe with "
            "each model, its learning-rate schedule fitted to the per-run training budget. Inference: "
            "`Predictor.predict_array` on 256 test images, best of 3, with the thread count stated per dataset."
        )
        columns = ["model", "seeds", "test AUC", "test ACC", "params", "train min", "infer img/s"]
    lines = [head, ""]
    rank = {m: i for i, m in enumerate(MODELS)}
    for dataset, entry in saved.items():
        models = entry["results"]
        where = entry.get("device") or f"{entry['threads']} thread(s) per run"
        commands = entry.get("commands") or [entry["command"]]
        said = " then ".join(f"`{c}`" for c in commands)
        lines += [f"### {dataset}", "", f"Command{'s' if len(commands) > 1 else ''}: {said} ({where}).", ""]
        speed = entry.get("inference")
        if speed:
            lines += [
                f"Inference re-measured with {speed['threads']} threads on one run per model: `{speed['command']}`.",
                "",
            ]
        if dataset in FOLDERS:
            folder, size, val, test = FOLDERS[dataset]
            lines += [
                f"Data: the `{folder}/` folder at {size} px, byte-identical duplicates dropped, then a seeded split "
                f"with {val:.0%} validation and {test:.0%} test images (split seed 0, the same for every run).",
                "",
            ]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += _reference_lines(dataset, len(columns))
        failed = []
        for model, runs in sorted(models.items(), key=lambda kv: rank.get(kv[0], len(rank))):
            rs = [r for r in runs.values() if "error" not in r]
            failed += [f"{model} (seed {k}): {r['error']}" for k, r in runs.items() if "error" in r]
            if not rs:
                continue
            row = [model, str(len(rs)), mean_sd([r["auc"] for r in rs]), mean_sd([r["acc"] for r in rs])]
            row += [f"{rs[0]['params']:,}", f"{statistics.mean(r['minutes'] for r in rs):.1f}"]
            if not gpu:
                rate = speed["img_s"].get(model) if speed else None
                row.append(f"{rate if rate is not None else statistics.mean(r['img_s'] for r in rs):.0f}")
            lines.append("| " + " | ".join(row) + " |")
        lines += [""] + [f"- failed: {f}" for f in failed] + ([""] if failed else [])
    return "\n".join(lines)


PREFIX = {"budget": "leaderboard-", "full": "leaderboard-full-", "gpu": "leaderboard-gpu-"}


def _saved(mode: str) -> dict[str, dict]:
    """The saved results, dataset: entry, from ``leaderboard-[full-|gpu-]<dataset>.json``."""
    prefix = PREFIX[mode]
    others = tuple(p for p in PREFIX.values() if p != prefix and p.startswith(prefix))
    saved = {
        f.stem.removeprefix(prefix): json.loads(f.read_text())
        for f in RESULTS.glob(f"{prefix}*.json")
        if not f.name.startswith(others)
    }
    order = {"pneumoniamnist": 0, "breastmnist": 1}
    return dict(sorted(saved.items(), key=lambda kv: (order.get(kv[0], 2), kv[0])))


def render_all() -> None:
    """Rewrite the ``leaderboard`` sections (CPU budget, CPU full schedule, GPU) of ``BENCHMARKS.md``."""
    for mode, name, heading in (
        ("budget", "leaderboard", "Leaderboard: architectures side by side"),
        ("full", "leaderboard-full", "Leaderboard without a time budget (CPU): what each architecture reaches"),
        ("gpu", "leaderboard-gpu", "Leaderboard without a time budget (GPU)"),
    ):
        if saved := _saved(mode):
            update_section(name, heading, render(saved, mode=mode))


def _test_images(dataset: str, data_root: str) -> tuple[str, int | None, dict, object]:
    """``(spec, native size, split fractions, first 256 test images)`` of a leaderboard dataset."""
    from medclass.data.sources import load_dataset

    spec, native, split = dataset, None, {}
    if dataset in FOLDERS:
        folder, native, val, test = FOLDERS[dataset]
        spec, split = str(Path(data_root) / folder), {"val": val, "test": test}
    data = load_dataset(spec, image_size=native, **split)
    return spec, int(data.sample_shape[-1]), split, data.splits["test"].images[:256].numpy()


def remeasure_inference(args: argparse.Namespace) -> None:
    """Time ``Predictor.predict_array`` again for one recorded run per model, with the current thread count."""
    import torch

    command = "python bench/leaderboard.py " + " ".join(sys.argv[1:])
    for dataset in args.datasets:
        file = Path(args.results) if args.results else RESULTS / f"leaderboard-{dataset}.json"
        entry = json.loads(file.read_text())
        images = _test_images(dataset, args.data)[3]
        rates = {}
        for model, runs in entry["results"].items():
            seeds = [k for k, r in runs.items() if "error" not in r]
            run = Path(args.out) / f"{dataset}-{model.replace('/', '_')}-s{seeds[0]}" if seeds else None
            if run is not None and (run / "model.json").is_file():
                rates[model] = inference_rate(run, images)
                print(dataset, model, f"{rates[model]:.0f} img/s", flush=True)
        entry["inference"] = {"threads": torch.get_num_threads(), "command": command, "img_s": rates}
        file.write_text(json.dumps(entry, indent=2))
    render_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=1.5, help="training budget per run (CPU); 0: no budget")
    ap.add_argument("--device", default="cpu", help="cuda: train without a budget on the GPU, no inference timing")
    ap.add_argument("--results", help="results file (default bench/results/leaderboard[-gpu]-<dataset>.json)")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from saved results")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding mednist/")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-leaderboard"))
    ap.add_argument(
        "--inference-only",
        action="store_true",
        help="re-measure inference of recorded runs with this process's threads (one run per model), no training",
    )
    args = ap.parse_args()
    if args.render:
        render_all()
        return
    if args.inference_only:
        remeasure_inference(args)
        return
    command = "python bench/leaderboard.py " + " ".join(sys.argv[1:])
    gpu = args.device != "cpu"
    mode = "gpu" if gpu else "full" if not args.minutes else "budget"
    import torch

    for dataset in args.datasets:
        file = Path(args.results) if args.results else RESULTS / f"{PREFIX[mode]}{dataset}.json"
        entry = json.loads(file.read_text()) if file.exists() else {"results": {}}
        commands = entry.get("commands") or ([entry["command"]] if "command" in entry else [])
        entry.update(command=command, commands=[*dict.fromkeys([*commands, command])], threads=torch.get_num_threads())
        if gpu:
            entry["device"] = torch.cuda.get_device_name(0)
        results: dict = entry["results"]
        spec, native, split, test_images = _test_images(dataset, args.data)
        data_yaml = "".join(f"  {k}_fraction: {v}\n" for k, v in split.items())
        data_yaml = f"data:\n{data_yaml}" if data_yaml else ""
        for model in args.models:
            for seed in args.seeds:
                runs = results.setdefault(model, {})
                if str(seed) in runs:
                    continue
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                    budget = f"  max_minutes: {args.minutes}\n" if mode == "budget" else ""
                    fh.write(data_yaml + f"train:\n  device: {args.device}\n" + budget)
                try:
                    size = image_size(model, native)
                    tag = "" if mode == "budget" else f"{mode}-"
                    out = Path(args.out) / f"{tag}{dataset}-{model.replace('/', '_')}-s{seed}"
                    cli = ["--data", spec, "--model", model, "--recipe", "default", "--seed", str(seed)]
                    resize = size != native or dataset in FOLDERS
                    cli += ["--config", fh.name] + (["--image-size", str(size)] if resize else [])
                    row = train_and_read(cli, out)
                    if not gpu:
                        row["img_s"] = inference_rate(out, test_images)
                except (SystemExit, Exception) as exc:  # record the failure, go on with the other runs
                    row = {"error": str(exc).splitlines()[-1][:200] if str(exc) else type(exc).__name__}
                finally:
                    os.unlink(fh.name)
                runs[str(seed)] = row
                print(dataset, model, seed, json.dumps(row), flush=True)
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(json.dumps(entry, indent=2))
                render_all()


if __name__ == "__main__":
    main()
