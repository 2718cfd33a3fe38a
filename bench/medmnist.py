"""Benchmark the default recipe on MedMNIST and our training throughput against the reference loop.

Runs ``medclass train`` with the default recipe on PneumoniaMNIST, BreastMNIST and AdrenalMNIST3D
for 3 seeds each, then measures, in the same process, training images/s of

* the reference recipe: a plain PyTorch loop as in the MedMNIST experiments code (ResNet-18 for
  28 px, 3-channel input (``--as_rgb``), batch 128, Adam 1e-3, per-item PIL -> ToTensor -> Normalize
  through a ``DataLoader``), and
* our loop (``medclass.training.loop.train_one_epoch``) on the same model, batch size and optimiser,

and writes the table into ``BENCHMARKS.md`` (between the ``medmnist`` markers) and the raw figures
into ``bench/results/medmnist.json``.

Usage:
    python bench/medmnist.py [--datasets pneumoniamnist breastmnist adrenalmnist3d] [--seeds 0 1 2]
                             [--recipe default] [--throughput-steps 6] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from medclass.cli import main as cli_main  # noqa: E402
from medclass.evaluate import MEDMNIST_REFERENCE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "medmnist.json"
CPU = torch.device("cpu")


def train_runs(datasets: list[str], seeds: list[int], recipe: str, out_root: Path) -> dict[str, list[dict]]:
    """Train every (dataset, seed) with ``recipe``; return test AUC/ACC, minutes and images/s per run."""
    results: dict[str, list[dict]] = {}
    for name in datasets:
        for seed in seeds:
            out = out_root / f"{name}-{recipe}-s{seed}"
            t0 = time.perf_counter()
            code = cli_main(
                ["train", "--data", name, "--recipe", recipe, "--seed", str(seed), "--out", str(out), "--quiet"]
            )
            wall = time.perf_counter() - t0
            if code != 0:
                raise SystemExit(f"training {name} seed {seed} failed with exit code {code}")
            metrics = json.loads((out / "metrics.json").read_text())
            hist = (out / "history.csv").read_text().splitlines()
            header = hist[0].split(",")
            secs = sum(float(r.split(",")[header.index("seconds")]) for r in hist[1:])
            from medclass.data.sources import load_dataset

            n_train = len(load_dataset(name).splits["train"])
            test = metrics["splits"]["test"]
            results.setdefault(name, []).append(
                {
                    "seed": seed,
                    "auc": test["auc"],
                    "acc": test["acc"],
                    "train_minutes": secs / 60,
                    "wall_minutes": wall / 60,
                    "images_per_s": n_train * (len(hist) - 1) / secs,
                }
            )
            print(f"{name} seed {seed}: test AUC {test['auc']:.4f} ACC {test['acc']:.4f}, {secs / 60:.1f} train min")
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_throughput(
    images: np.ndarray, labels: np.ndarray, steps: int, batch: int = 128, device: torch.device = CPU
) -> float:
    """Images/s of the MedMNIST-experiments style loop (per-item PIL transforms, DataLoader, NCHW).

    On a GPU, as in that code, each batch moves to the device after the ``DataLoader`` built it.
    """
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from medclass.models import create_model

    class NpzDataset(Dataset):
        def __init__(self, imgs, labs):
            self.imgs, self.labs = imgs, labs
            self.tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])

        def __len__(self):
            return len(self.imgs)

        def __getitem__(self, i):
            img = Image.fromarray(self.imgs[i]).convert("RGB")
            return self.tf(img), self.labs[i]

    torch.manual_seed(0)
    model = create_model("resnet18_28", in_chans=3, num_classes=2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    loader = DataLoader(NpzDataset(images, labels.astype(np.int64)), batch_size=batch, shuffle=True)
    model.train()
    done, t0 = 0, None
    while done < steps + 2:
        for x, y in loader:
            if done == 2:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device), y.to(device)
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps + 2:
                break
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _our_throughput(
    images: np.ndarray, labels: np.ndarray, steps: int, batch: int = 128, device: torch.device = CPU
) -> float:
    """Images/s of medclass's loop on the same model, batch and optimiser (in-memory, channels-last).

    On a GPU the loop's own choices hold too: bf16 autocast where the device has it (``precision: auto``).
    """
    from medclass.config import AugmentConfig, OptimConfig
    from medclass.data.dataset import Split
    from medclass.models import create_model
    from medclass.training.loop import autocast_dtype, train_one_epoch
    from medclass.training.optim import build_scheduler
    from medclass.transforms import build_augment

    n = (steps + 2) * batch
    rows = np.arange(n) % len(images)  # repeat the data when more steps are timed than it fills
    rgb = np.repeat(images[rows, None], 3, axis=1)
    split = Split(torch.from_numpy(rgb), labels[rows].astype(np.float32).reshape(-1))
    torch.manual_seed(0)
    model = create_model("resnet18_28", in_chans=3, num_classes=2).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = build_scheduler(opt, OptimConfig(schedule="constant", warmup_epochs=0), steps_per_epoch=steps + 2, epochs=1)
    prep = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}
    times: list[float] = []
    gen = torch.Generator().manual_seed(0)
    train_one_epoch(
        model,
        split,
        task="multiclass",
        prep=prep,
        optimizer=opt,
        scheduler=sched,
        batch_size=batch,
        generator=gen,
        augment=build_augment(AugmentConfig()),
        loss_kwargs={},
        amp=autocast_dtype("auto", device),
        on_step=lambda _loss: times.append(time.perf_counter()),
    )
    return steps * batch / (times[-1] - times[1])


def throughput(steps: int, device: str = "cpu") -> dict[str, float]:
    """Reference vs our training images/s on PneumoniaMNIST (ResNet-18 28 px, batch 128), alternating runs."""
    dev = torch.device(device)
    from medclass.data.sources import load_dataset

    ds = load_dataset("pneumoniamnist")
    imgs = ds.splits["train"].images[:, 0].numpy()
    labs = ds.splits["train"].labels
    ref, ours = [], []
    for _ in range(2):  # alternate to share the machine's noise
        ref.append(_reference_throughput(imgs, labs, steps, device=dev))
        ours.append(_our_throughput(imgs, labs, steps, device=dev))
    r, o = max(ref), max(ours)
    print(
        f"training throughput, ResNet-18 (28) batch 128: reference {r:.1f} img/s, medclass {o:.1f} img/s, "
        f"ratio {o / r:.2f}x"
    )
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.machine()}, {os.cpu_count()} cores"
    return {
        "reference_img_s": r,
        "medclass_img_s": o,
        "ratio": o / r,
        "reference_runs": ref,
        "medclass_runs": ours,
        "device": name,
        "torch": torch.__version__,
    }


def _fmt(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def render(results: dict, tp: dict | None, command: str) -> str:
    lines = [
        "<!-- medmnist:start -->",
        "## MedMNIST: default recipe",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Test split; mean ± sd over seeds {results.get('seeds')}.",
        "",
    ]
    for name, runs in results.get("runs", {}).items():
        lines += [
            f"### {name}",
            "",
            "| method | test AUC | test ACC | train min | train img/s |",
            "|---|---|---|---|---|",
        ]
        for m, a, c in MEDMNIST_REFERENCE.get(name, []):
            lines.append(f"| {m} | {a:.3f} | {c:.3f} | | |")
        lines.append(
            f"| **medclass default** | **{_fmt([r['auc'] for r in runs])}** | **{_fmt([r['acc'] for r in runs])}**"
            f" | {_fmt([r['train_minutes'] for r in runs])} | {statistics.mean(r['images_per_s'] for r in runs):.0f} |"
        )
        lines.append("")
    if tp:
        lines += [
            "### Training throughput (ResNet-18, 28 px, batch 128, Adam)",
            "",
            "| loop | train img/s |",
            "|---|---|",
            "| reference (MedMNIST experiments style: DataLoader, per-item PIL transforms) | "
            f"{tp['reference_img_s']:.1f} |",
            f"| medclass loop (in-memory uint8, channels-last) | {tp['medclass_img_s']:.1f} |",
            f"| **ratio** | **{tp['ratio']:.2f}x** |",
            "",
        ]
    lines.append("<!-- medmnist:end -->")
    return "\n".join(lines)


def render_device_throughput(tp: dict, command: str) -> str:
    """The GPU throughput table: the same two loops as the CPU table, on ``tp["device"]``."""
    return "\n".join(
        [
            f"Command: `{command}` ({tp['device']}, torch {tp.get('torch', torch.__version__)}). "
            "ResNet-18 (28), batch 128, Adam; "
            "the reference loop as in the CPU table (per-item PIL transforms in a `DataLoader`, each batch then "
            "moved to the GPU, fp32); the medclass loop keeps `uint8` rows in memory, augments on the CPU, "
            "moves each batch to the GPU and trains channels-last under bf16 autocast (`precision: auto`).",
            "",
            "| loop | train img/s |",
            "|---|---|",
            f"| reference | {tp['reference_img_s']:.0f} |",
            f"| medclass loop | {tp['medclass_img_s']:.0f} |",
            f"| **ratio** | **{tp['ratio']:.2f}x** |",
        ]
    )


def update_benchmarks_md(section: str) -> None:
    """``section`` carries its own markers; hand its inside to :func:`benchmd.update_section`."""
    inner = section.replace("<!-- medmnist:start -->", "").replace("<!-- medmnist:end -->", "")
    update_section("medmnist", "MedMNIST: default recipe", inner)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist", "adrenalmnist3d"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipe", default="default")
    p.add_argument("--throughput-steps", type=int, default=6)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument(
        "--device", default="cpu", help="measure only the throughput, on this device (cuda): its own section"
    )
    p.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    command = "python bench/medmnist.py " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "make bench"
    if args.device != "cpu":
        tp = throughput(args.throughput_steps, args.device)
        file = RESULTS.with_name(f"throughput-{torch.device(args.device).type}.json")
        file.write_text(json.dumps({"command": command, **tp}, indent=2))
        update_section("throughput-gpu", "Training throughput on a GPU", render_device_throughput(tp, command))
        print(f"wrote {file} and BENCHMARKS.md")
        return
    results = {"seeds": args.seeds, "recipe": args.recipe, "runs": {}}
    if not args.skip_train:
        results["runs"] = train_runs(args.datasets, args.seeds, args.recipe, Path(args.out))
    tp = throughput(args.throughput_steps) if args.throughput_steps else None
    results["throughput"] = tp
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    update_benchmarks_md(render(results, tp, command))
    print(f"wrote {RESULTS} and BENCHMARKS.md")


if __name__ == "__main__":
    main()
