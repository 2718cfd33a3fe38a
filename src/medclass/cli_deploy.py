"""``medclass export``: a run as one ONNX graph (pixels to calibrated probabilities), checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    from medclass.checkpoint import load_model
    from medclass.config import config_from_dict, read_yaml
    from medclass.data.sources import load_configured
    from medclass.deploy.export import export_onnx

    run = Path(args.checkpoint)
    model, meta = load_model(run)
    cfg = config_from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml"))
    dataset = load_configured(cfg.data)
    train, test = dataset.splits["train"], dataset.splits["test"]
    rng = __import__("numpy").random.default_rng(0)
    pick = rng.choice(len(train), min(len(train), 256), replace=False)
    out = Path(args.out) if args.out else run / ("model.int8.onnx" if args.quantize == "int8" else "model.onnx")
    entries = export_onnx(
        model,
        meta,
        out,
        check_images=test.images[:64].numpy(),
        quantize=args.quantize,
        calibration_images=train.images[pick].numpy(),
        test=(test.images.numpy(), test.labels) if args.quantize == "int8" else None,
    )
    print(f"wrote {out} (parity with PyTorch: max |dp| {entries['parity_max_abs_diff']:.1e})")
    if "int8_test_auc" in entries:
        q = entries["int8_test_auc"]
        print(f"int8: test AUC {q['fp32']:.4f} -> {q['int8']:.4f} ({q['change']:+.4f})")
    return 0


def add_deploy_commands(sub: Any) -> None:
    """Add ``export`` to the ``medclass`` subcommand parser."""
    ex = sub.add_parser("export", help="export a run to ONNX (optionally int8), checked against PyTorch")
    ex.add_argument("--checkpoint", required=True, help="run folder")
    ex.add_argument("--format", default="onnx", choices=["onnx"])
    ex.add_argument("--quantize", default="none", choices=["none", "int8"])
    ex.add_argument("--out", help="output file (default RUN/model.onnx or RUN/model.int8.onnx)")
    ex.set_defaults(func=cmd_export)
