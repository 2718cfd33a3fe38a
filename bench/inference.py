"""Inference benchmark: end-to-end images/s and single-image latency per engine and precision, against the GEMM roof.

For each model (untrained weights: speed does not depend on them) it measures, on this machine:

* end-to-end throughput over ``--images`` PNG files: decode, resize, model, probabilities, in
  batches of ``--batch``, for PyTorch eager (the baseline), ONNX Runtime fp32, int8 and bf16 weights
  (stored in bf16, computed in fp32: the CPU provider has no bf16 kernels);
* the engine alone on the same images, decoded and prepared beforehand (its ratio to ONNX Runtime
  fp32 is what the precision itself gains);
* single-image latency p50/p99 (model only, batch 1);
* rounds interleave the engines: images/s is an engine's best round, and each ratio the median over
  rounds of the ratio within a round (two measurements seconds apart, so the host's drift cancels);
* achieved GFLOP/s (model FLOPs x images/s) divided by the measured fp32 matrix-multiply roof (a
  large ``torch.matmul``), the share of the machine's peak the engine reaches (int8 can pass 100%:
  its arithmetic is not fp32's).

Writes ``BENCHMARKS.md`` (``inference`` section) and ``bench/results/inference.json``.

Usage:
    python bench/inference.py [--models resnet18_224 densenet121 smallcnn] [--images 256] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from machine import cpu_description  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "inference.json"
SIZES = {"resnet18_224": 224, "densenet121": 224, "smallcnn": 28}


def gemm_roof(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an ``n`` x ``n`` matrix product on this machine, over two BLAS libraries.

    PyTorch's (MKL) and NumPy's (OpenBLAS) products are both timed: on some CPUs one of them takes a
    slower code path (MKL on AMD processors, for one), and the roof is what the hardware can do.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    products = (lambda: torch.matmul(a, b), lambda: a.numpy() @ b.numpy())
    best = 0.0
    for product in products:
        product()
        for _ in range(repeats):
            t0 = time.perf_counter()
            product()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def model_gflops(model: torch.nn.Module, size: int) -> float:
    """Forward GFLOPs of one ``1 x size x size`` image (multiply-adds x 2), counted by PyTorch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def make_run(name: str, size: int, root: Path) -> Path:
    """A run folder with an untrained ``name`` for 1-channel ``size`` px binary inputs (speed only)."""
    from medclass.checkpoint import save_model
    from medclass.config import RunConfig
    from medclass.data.dataset import Dataset, Split
    from medclass.models import build_model
    from medclass.training.loop import model_meta

    cfg = RunConfig()
    cfg.model.name = name
    split = Split(torch.zeros(2, 1, size, size, dtype=torch.uint8), np.array([0.0, 1.0], np.float32))
    ds = Dataset("speed", "binary", ["neg", "pos"], {"train": split, "val": split, "test": split}, source="synthetic")
    meta = model_meta(cfg, ds, threshold=0.5)
    run = root / name
    save_model(run, build_model(meta["architecture"]).eval(), meta)
    return run


def write_pngs(folder: Path, n: int, size: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def throughput(call: Callable[[Any], object], items: Sequence[Any], batch: int) -> float:
    """Items/s of ``call`` over ``items`` in batches: ``predictor.predict_paths`` on image files for the end to
    end rate (decode, preprocess, model, probabilities), ``predictor.probs`` on a decoded stack for the engine alone."""
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        call(items[i : i + batch])
    return len(items) / (time.perf_counter() - t0)


def paired(rates: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of ``rates[i] / baseline[i]``.

    Each ratio compares two measurements seconds apart, so the host's drift between rounds (which a
    ratio of each engine's best round would pick up) cancels.
    """
    return float(np.median(np.asarray(rates) / np.asarray(baseline)))


def latency(predictor: object, image: np.ndarray, repeats: int = 50) -> tuple[float, float]:
    """p50 and p99 milliseconds of one-image prediction (already decoded)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_array(image)  # type: ignore[attr-defined]
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    from medclass.deploy.export import export_onnx
    from medclass.predict import Predictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(SIZES))
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds over all engines (interleaved)")
    args = ap.parse_args()
    command = "python bench/inference.py " + " ".join(sys.argv[1:])
    roof = gemm_roof()
    print(f"fp32 GEMM roof: {roof:.0f} GFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models:
            size = SIZES.get(name, 224)
            run = make_run(name, size, root)
            folder = root / f"png{size}"
            folder.mkdir(exist_ok=True)
            paths = sorted(folder.glob("*.png")) or write_pngs(folder, args.images, size)
            torch_pred = Predictor.from_checkpoint(run)
            gflops = model_gflops(torch_pred.model, size)
            rng = np.random.default_rng(1)
            calib = rng.integers(0, 256, (64, 1, size, size), dtype=np.uint8)
            engines = {
                "torch eager fp32": torch_pred,
                "onnxruntime fp32": Predictor.from_checkpoint(run, engine="onnxruntime"),
            }
            for q in ("int8", "bf16"):
                export_onnx(torch_pred.model, torch_pred.meta, run / f"model.{q}.onnx", check_images=calib[:8],
                            quantize=q, calibration_images=calib)  # fmt: skip
                label = "bf16 weights" if q == "bf16" else q
                engines[f"onnxruntime {label}"] = Predictor.from_checkpoint(
                    run, engine="onnxruntime", onnx_file=run / f"model.{q}.onnx"
                )
            for pred in engines.values():
                throughput(pred.predict_paths, paths[: args.batch], args.batch)  # warm-up
            # rounds interleave the engines, so a slow spell of the host does not fall on one engine only
            rates: dict[str, list[float]] = {engine: [] for engine in engines}
            engine_rates: dict[str, list[float]] = {engine: [] for engine in engines}
            decoded, _ = torch_pred.load_inputs(paths)
            for _ in range(args.rounds):
                for engine, pred in engines.items():
                    rates[engine].append(throughput(pred.predict_paths, paths, args.batch))
                    engine_rates[engine].append(throughput(pred.probs, decoded, args.batch))
            base, fp32 = rates["torch eager fp32"], engine_rates["onnxruntime fp32"]
            for engine, pred in engines.items():
                rate = max(rates[engine])
                p50, p99 = latency(pred, calib[0, 0])
                row = {"model": name, "size": size, "engine": engine, "img_s": rate}
                row.update(ratio=paired(rates[engine], base))
                row.update(model_img_s=max(engine_rates[engine]), model_ratio=paired(engine_rates[engine], fp32))
                row.update(p50_ms=p50, p99_ms=p99, gflop_s=gflops * rate)
                row.update(rounds_img_s=rates[engine], rounds_model_img_s=engine_rates[engine])
                rows.append(row)
                figures = {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
                print(name, engine, json.dumps(figures), flush=True)
    # this machine's speed drifts (shared host): the roof is the best of a measurement before and after
    roof = max(roof, gemm_roof())
    print(f"fp32 GEMM roof, best of before and after: {roof:.0f} GFLOP/s", flush=True)
    for row in rows:
        row["roof_share"] = row["gflop_s"] / roof
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command, "roof_gflop_s": roof, "rows": rows}, indent=2))
    lines = [
        f"Command: `{command}` ({cpu_description()}; {os.cpu_count()} cores; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}). End to end: "
        f"PNG decode, resize, model, probabilities, batches of {args.batch}, {args.rounds} rounds that "
        "interleave the engines; images/s is the best round, and each ratio the median over rounds of the ratio "
        "within a round (paired, so the host's drift between rounds cancels). Engine only: the same images "
        "already decoded and prepared, probabilities from the engine, against ONNX Runtime fp32. Latency: one "
        "decoded image. bf16 weights: stored in bfloat16, "
        "computed in fp32 (ONNX Runtime's CPU provider has no bf16 kernels). "
        "fp32 GEMM roof measured in the same run (best of PyTorch's and NumPy's matrix products, before and "
        f"after the engines): {roof:.0f} GFLOP/s.",
        "",
        "| model | px | engine | images/s | vs eager | engine only, images/s | vs ORT fp32 | p50 ms | p99 ms "
        "| GFLOP/s | share of roof |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['size']} | {r['engine']} | {r['img_s']:.0f} | {r['ratio']:.2f}x | "
        f"{r['model_img_s']:.0f} | {r['model_ratio']:.2f}x | {r['p50_ms']:.1f} | "
        f"{r['p99_ms']:.1f} | {r['gflop_s']:.0f} | {100 * r['roof_share']:.0f}% |"
        for r in rows
    ]
    update_section("inference", "Inference: engines, precision and the roof", "\n".join(lines + [""]))


if __name__ == "__main__":
    main()
