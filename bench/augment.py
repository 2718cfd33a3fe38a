"""Benchmark: what share of a training step each batch augmentation takes.

For a batch of 64 grey images at 28 px (``smallcnn``) and 128 px (``smallcnn_hr``), times one
training step (forward, backward, AdamW) and each augmentation alone on the same batch, best of
``--repeats``, in the same process; prints and records the augmentation time as a share of the step.
Writes the table into ``BENCHMARKS.md`` (between the ``augment`` markers) and
``bench/results/augment.json``.

Usage:
    python bench/augment.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from medclass.config import AugmentConfig  # noqa: E402
from medclass.models import create_model  # noqa: E402
from medclass.transforms import build_augment  # noqa: E402
from medclass.transforms.mixing import Mixer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "augment.json"
CASES = {
    "affine (rotate, translate, scale)": AugmentConfig(enabled=True, rotate=10, translate=0.06, scale=0.1),
    "brightness/contrast": AugmentConfig(enabled=True, brightness=0.1, contrast=0.15),
    "gamma": AugmentConfig(enabled=True, gamma=0.3),
    "random resized crop": AugmentConfig(enabled=True, crop=0.7),
    "elastic": AugmentConfig(enabled=True, elastic=0.03),
    "bias field": AugmentConfig(enabled=True, bias_field=0.3),
    "Gaussian blur": AugmentConfig(enabled=True, blur=1.0),
    "Gaussian noise": AugmentConfig(enabled=True, noise=0.1),
    "speckle": AugmentConfig(enabled=True, speckle=0.2),
    "salt and pepper": AugmentConfig(enabled=True, salt_pepper=0.02),
    "TrivialAugment policy": AugmentConfig(enabled=True, policy="trivial"),
    "default recipe (affine + intensity)": AugmentConfig(
        enabled=True, translate=0.06, rotate=10, scale=0.08, brightness=0.05, contrast=0.1
    ),
}


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(size: int, model_name: str, repeats: int, batch: int = 64) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(model_name, in_chans=1, num_classes=1).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = (torch.rand(batch, 1, size, size) * 2 - 1).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch) < 0.5).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step_s = _best(step, repeats)
    out = {"step_ms": step_s * 1000}
    for name, cfg in CASES.items():
        aug = build_augment(cfg)
        out[name] = _best(lambda a=aug: a(x, torch.Generator().manual_seed(0)), repeats) / step_s
    mixer = Mixer("binary", 2, mixup_alpha=0.2, cutmix_alpha=1.0)
    out["mixup/cutmix"] = _best(lambda: mixer(x, y, torch.Generator().manual_seed(0)), repeats) / step_s
    return out


def render(results: dict[str, dict[str, float]], command: str) -> str:
    cols = list(results)
    lines = [
        f"Command: `{command}` ({platform.processor() or platform.machine()}, {os.cpu_count()} cores). "
        "Time of each augmentation on a batch of 64 grey images, as a share of one training step "
        "(forward, backward, AdamW) on the same batch.",
        "",
        "| augmentation | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
        "| training step (ms) | " + " | ".join(f"{results[c]['step_ms']:.0f}" for c in cols) + " |",
    ]
    for name in results[cols[0]]:
        if name != "step_ms":
            lines.append(f"| {name} | " + " | ".join(f"{100 * results[c][name]:.1f} %" for c in cols) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    command = "python bench/augment.py " + " ".join(sys.argv[1:])
    results = {
        "28 px, smallcnn": measure(28, "smallcnn", args.repeats),
        "128 px, smallcnn_hr": measure(128, "smallcnn_hr", args.repeats),
    }
    section = render(results, command.strip())
    print(section)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": results, "command": command.strip()}, indent=2))
    update_section("augment", "Augmentation cost", section)


if __name__ == "__main__":
    main()
