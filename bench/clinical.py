"""Benchmark clinical I/O and training on real image folders.

1. **Decode throughput** (images/s) over the real DICOM files and the Kermany chest X-ray JPEGs:
   medclass's reader (``medclass.io.read`` plus conversion to the ``uint8`` image training uses)
   beside a plain loop (``pydicom.dcmread(f).pixel_array`` / ``PIL.Image.open(f).convert("L")``)
   in the same run, alternating, best of ``--repeats``.
2. **Decoded-pixel cache**: loading the Kermany manifest cold (decode) and warm (cache).
3. **Training** through the CLI with the ``hires`` recipe: test AUC/ACC and minutes for Kermany
   (``labels.csv`` re-split with ``medclass split --by patient --val 0.1 --test 0.2``) at 64 and
   128 px, Kermany at 128 px on the dataset's own train/test folders (validation carved out of
   train by patient; the audit finds patient IDs shared by both folders), and MedNIST (class
   folders, byte-identical duplicates dropped, seeded split) at 64 px.

Writes the tables into ``BENCHMARKS.md`` (between the ``clinical`` markers) and the raw figures
into ``bench/results/clinical.json``.

Usage:
    python bench/clinical.py [--data ../shared/data] [--skip-train] [--runs kermany64 kermany128 mednist64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from medclass.cli import main as cli_main  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "clinical.json"
# name: (data under --data, image size, description, re-split by patient with `medclass split`)
RUNS = {
    "kermany64": ("chest_xray_kermany224/labels.csv", 64, "Kermany chest X-ray, 64 px, patient-level split", True),
    "kermany128": ("chest_xray_kermany224/labels.csv", 128, "Kermany chest X-ray, 128 px, patient-level split", True),
    "kermany128_given": (
        "chest_xray_kermany224/labels.csv",
        128,
        "Kermany chest X-ray, 128 px, the dataset's own train/test folders",
        False,
    ),
    "mednist64": ("mednist", 64, "MedNIST, 64 px, duplicates dropped, seeded split", False),
}


def _dicom_files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "dicom").rglob("*.dcm"))


def _jpeg_files(data: Path, limit: int) -> list[Path]:
    return sorted((data / "chest_xray_kermany224").rglob("*.jpeg"))[:limit]


def _ours(paths: list[Path]) -> float:
    from medclass.io.images import read_image

    t0 = time.perf_counter()
    for p in paths:
        read_image(p)
    return len(paths) / (time.perf_counter() - t0)


def _plain(paths: list[Path]) -> float:
    import numpy as np
    import pydicom
    from PIL import Image

    t0 = time.perf_counter()
    for p in paths:
        if p.suffix == ".dcm":
            np.asarray(pydicom.dcmread(p, force=True).pixel_array)
        else:
            with Image.open(p) as img:
                np.asarray(img.convert("L"))
    return len(paths) / (time.perf_counter() - t0)


def decode_throughput(data: Path, repeats: int, n_jpeg: int) -> dict[str, dict[str, float]]:
    """Images/s of medclass's reader and the plain loop on the DICOM files and the Kermany JPEGs."""
    out: dict[str, dict[str, float]] = {}
    for name, paths in (("dicom", _dicom_files(data)), ("kermany_jpeg", _jpeg_files(data, n_jpeg))):
        plain_ok = paths
        if name == "dicom":  # the plain loop cannot decode everything: time both on what it can
            plain_ok = []
            import pydicom

            for p in paths:
                try:
                    pydicom.dcmread(p, force=True).pixel_array  # noqa: B018
                    plain_ok.append(p)
                except Exception:  # noqa: BLE001 - counting what plain pydicom fails on
                    pass
        ours, plain = [], []
        for _ in range(repeats):
            plain.append(_plain(plain_ok))
            ours.append(_ours(plain_ok))
        out[name] = {
            "files": len(paths),
            "plain_decodable": len(plain_ok),
            "medclass_img_s": max(ours),
            "plain_img_s": max(plain),
            "ratio": max(ours) / max(plain),
        }
        print(f"decode {name}: {out[name]}")
    return out


def cache_timing(data: Path) -> dict[str, float]:
    """Seconds to load the Kermany manifest at 128 px with an empty cache, then with a warm one."""
    from medclass.data.sources import load_dataset

    spec = str(data / "chest_xray_kermany224" / "labels.csv")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MEDCLASS_CACHE_DIR"] = cache
        t0 = time.perf_counter()
        load_dataset(spec, image_size=128)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_dataset(spec, image_size=128)
        warm = time.perf_counter() - t0
        del os.environ["MEDCLASS_CACHE_DIR"]
    print(f"kermany manifest at 128 px: cold {cold:.1f} s, warm (cache) {warm:.1f} s")
    return {"cold_s": cold, "warm_s": warm}


def train_runs(data: Path, names: list[str], out_root: Path, seed: int) -> dict[str, dict]:
    """Train each named run with the ``hires`` recipe through the CLI; return test metrics and minutes."""
    results = {}
    for name in names:
        rel, size, _, resplit = RUNS[name]
        out = out_root / name
        shutil.rmtree(out, ignore_errors=True)
        spec = data / rel
        if resplit:
            spec = out_root / f"{name}-split.csv"
            if cli_main(["split", str(data / rel), "--by", "patient", "--seed", str(seed), "--out", str(spec)]):
                raise SystemExit(f"splitting {rel} failed")
        t0 = time.perf_counter()
        code = cli_main(
            ["train", "--data", str(spec), "--recipe", "hires", "--image-size", str(size)]
            + ["--seed", str(seed), "--out", str(out), "--quiet"]
        )
        if code != 0:
            raise SystemExit(f"training {name} failed with exit code {code}")
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
        hist = (out / "history.csv").read_text().splitlines()
        header = hist[0].split(",")
        secs = sum(float(r.split(",")[header.index("seconds")]) for r in hist[1:])
        test = metrics["splits"]["test"]
        results[name] = {
            "test_auc": test["auc"],
            "test_acc": test["acc"],
            "test_balanced_accuracy": test.get("balanced_accuracy"),
            "train_minutes": secs / 60,
            "wall_minutes": wall / 60,
            "epochs": len(hist) - 1,
        }
        print(f"{name}: {results[name]}")
    return results


def render(decode: dict | None, cache: dict | None, runs: dict | None, command: str) -> str:
    lines = [f"Command: `{command}` ({platform.processor() or platform.machine()}, {os.cpu_count()} cores).", ""]
    if decode:
        lines += [
            "| files | count | plain loop decodes | medclass img/s | plain img/s | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, d in decode.items():
            lines.append(
                f"| {name} | {d['files']} | {d['plain_decodable']} | {d['medclass_img_s']:.0f} | "
                f"{d['plain_img_s']:.0f} | {d['ratio']:.2f}x |"
            )
        lines += [
            "",
            "The plain loop is `pydicom.dcmread(f).pixel_array` (DICOM) or `PIL.Image.open(f).convert('L')` "
            "(JPEG); both are timed on the files the plain loop can decode. medclass does more per file "
            "(modality LUT, window, MONOCHROME1 inversion, colour conversion, scaling to uint8).",
            "",
        ]
    if cache:
        lines += [
            f"Decoded-pixel cache, Kermany manifest at 128 px: first load {cache['cold_s']:.1f} s, "
            f"second load {cache['warm_s']:.1f} s.",
            "",
        ]
    if runs:
        lines += ["| data | test AUC | test ACC | train min | epochs |", "|---|---|---|---|---|"]
        for name, r in runs.items():
            lines.append(
                f"| {RUNS[name][2]} | {r['test_auc']:.3f} | {r['test_acc']:.3f} | "
                f"{r['train_minutes']:.1f} | {r['epochs']} |"
            )
        lines += [
            "",
            "Recipe `hires` (`smallcnn_hr`), seed 0, test split; minutes are training epochs only. Caveats from "
            "`medclass audit` (docs/data-audit.md): MedNIST has no patient IDs, and about 310 of its 2,350 "
            "test images have a near-identical neighbouring slice in train, so its figure is optimistic; "
            "Kermany's own train/test folders share 170 patient IDs, which is why the headline Kermany rows "
            "re-split by patient.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jpegs", type=int, default=1000, help="Kermany JPEGs timed for decoding")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-clinical"))
    args = ap.parse_args()
    data = Path(args.data)
    command = "python bench/clinical.py " + " ".join(sys.argv[1:])
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    decode = old.get("decode") if args.skip_decode else decode_throughput(data, args.repeats, args.jpegs)
    cache = old.get("cache") if args.skip_decode else cache_timing(data)
    runs = dict(old.get("runs", {}))
    if args.skip_train and args.skip_decode:  # only re-rendering: keep the command that measured
        command = old.get("command", command)
    if not args.skip_train:
        runs.update(train_runs(data, args.runs, Path(args.out), args.seed))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"decode": decode, "cache": cache, "runs": runs, "command": command}, indent=2))
    update_section("clinical", "Clinical I/O and training on image folders", render(decode, cache, runs, command))
    print(f"wrote {RESULTS} and BENCHMARKS.md")


if __name__ == "__main__":
    main()
