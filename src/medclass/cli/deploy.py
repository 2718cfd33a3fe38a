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
    from medclass.inference import split_tabular

    run = Path(args.checkpoint)
    model, meta = load_model(run)
    cfg = config_from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml"))
    dataset = load_configured(cfg.data)
    train, test = dataset.splits["train"], dataset.splits["test"]
    rng = __import__("numpy").random.default_rng(0)
    pick = rng.choice(len(train), min(len(train), 256), replace=False)
    q = args.quantize
    out = Path(args.out) if args.out else run / ("model.onnx" if q == "none" else f"model.{q}.onnx")
    prep = meta["preprocessing"]
    fields = {"train": split_tabular(prep, train), "test": split_tabular(prep, test)}  # clinical fields, or None
    fields = {k: None if v is None else v.numpy() for k, v in fields.items()}
    test_set = (test.images.numpy(), test.labels) + (() if fields["test"] is None else (fields["test"],))
    entries = export_onnx(
        model,
        meta,
        out,
        check_images=test.images[:64].numpy(),
        check_tabular=None if fields["test"] is None else fields["test"][:64],
        quantize=q,
        calibration_images=train.images[pick].numpy(),
        calibration_tabular=None if fields["train"] is None else fields["train"][pick],
        test=test_set if q != "none" else None,
    )
    print(f"wrote {out} (fp32 parity with PyTorch: max |dp| {entries['parity_max_abs_diff']:.1e})")
    if q != "none":
        auc = entries[f"{q}_test_auc"]
        print(
            f"{q}: max |dp| against fp32 {entries['reduced_max_abs_diff']:.1e}, "
            f"test AUC {auc['fp32']:.4f} -> {auc[q]:.4f} ({auc['change']:+.4f})"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from medclass.errors import MedclassError
    from medclass.predict import Predictor
    from medclass.serve.app import create_app

    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise MedclassError(f"{args.token_file}: cannot read the token file ({err.strerror})") from None
        if not token:
            raise MedclassError(f"{args.token_file}: the token file is empty")
    predictor = Predictor.from_checkpoint(args.checkpoint, engine=args.engine)
    worklist = None
    if args.worklist:
        from functools import partial

        from medclass.node.worklist import read_worklist

        worklist = partial(read_worklist, args.worklist)
    app = create_app(
        predictor, run_dir=args.checkpoint, token=token, max_upload_mb=args.max_upload_mb, worklist=worklist
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_deploy_commands(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``export`` and ``serve`` to the ``medclass`` subcommand parser."""
    kw: dict[str, Any] = {"parents": parents, "formatter_class": formatter}
    ex = sub.add_parser("export", help="export a run to ONNX (optionally int8 or bf16), checked against PyTorch", **kw)
    ex.add_argument("--checkpoint", required=True, help="run folder")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    ex.add_argument(
        "--quantize",
        default="none",
        choices=["none", "int8", "bf16"],
        help="int8: static quantization calibrated on training images; bf16: weights stored in bfloat16 "
        "(half the file, fp32 arithmetic: this CPU provider has no bf16 kernels)",
    )
    ex.add_argument("--out", help="output file (default RUN/model.onnx or RUN/model.<int8|bf16>.onnx)")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="a REST service and web page for a run (FastAPI)", **kw)
    sv.add_argument("--checkpoint", required=True, help="run folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    sv.add_argument("--token-file", help="file holding the bearer token clients must send")
    sv.add_argument("--max-upload-mb", type=float, default=50.0, help="largest request body accepted, in MB")
    sv.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"], help="inference engine")
    sv.add_argument("--worklist", help="state folder of a medclass node: serve its triage worklist at /v1/worklist")
    sv.set_defaults(func=cmd_serve)
