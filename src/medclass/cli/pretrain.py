"""``medclass pretrain``: a thin layer over :func:`medclass.api.pretrain`."""

from __future__ import annotations

import argparse
from typing import Any

from medclass.cli.common import print_table, set_options
from medclass.errors import MedclassError

METHODS = ("simclr", "byol", "mim", "mae", "rotation", "slice_order")


def cmd_pretrain(args: argparse.Namespace) -> int:
    import medclass.api as api

    if not args.resume and not args.data:
        raise MedclassError("pretrain: --data is required")
    options: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "image_size": args.image_size,
        "device": args.device,
        "init_from": args.init_from,
    }
    options = {k: v for k, v in options.items() if v is not None}
    options.update(set_options(args.set))
    run = api.pretrain(
        args.data,
        method=args.method,
        model=args.model,
        out=args.out,
        unlabeled=args.unlabeled,
        recipe=args.recipe,
        config=args.config,
        resume=args.resume,
        progress=not args.quiet,
        **({} if args.resume else options),
    )
    print_probe(run.metrics, str(run.path))
    return 0


def print_probe(metrics: dict[str, Any], where: str) -> None:
    """The probes' validation and test AUC/ACC as a table on stdout."""
    rows = [
        [kind, split, f"{m['auc']:.4f}", f"{m['acc']:.4f}", str(m["n"])]
        for kind, splits in metrics.get("probe", {}).items()
        for split, m in splits.items()
    ]
    print(f"\n{metrics['dataset']}: {metrics['method']} encoder in {where}, frozen:")
    print_table(rows, ["probe", "split", "AUC", "ACC", "n"])


def add_pretrain_command(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``pretrain`` to the ``medclass`` subcommand parser."""
    p = sub.add_parser(
        "pretrain",
        help="learn an encoder from unlabelled images (self-supervised), then probe it",
        parents=parents,
        formatter_class=formatter,
        description="Pretrain an encoder on the task's training images (and --unlabeled data, cleared of copies of "
        "its validation and test images), then measure it frozen with linear and k-NN probes. "
        "'medclass train --init-from RUN' fine-tunes it.",
    )
    p.add_argument("--data", help="the task: catalog name, .npz, folder or .csv manifest (training images only)")
    p.add_argument("--unlabeled", action="append", metavar="SPEC", help="more images without labels (repeat)")
    p.add_argument(
        "--method", choices=METHODS, help="simclr, byol, mim, mae (ViTs, hybrid), rotation (2D) or slice_order (3D)"
    )
    p.add_argument("--model", help="registry name or timm/<name> (default: the recipe's)")
    p.add_argument("--recipe", default="auto", help="recipe whose model, data and pretrain sections apply")
    p.add_argument("--config", help="YAML file overriding the recipe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any config key: pretrain.temperature=0.1")
    p.add_argument("--epochs", type=int, help="passes over the image pool (pretrain.epochs)")
    p.add_argument("--batch-size", type=int, help="images per step (pretrain.batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (pretrain.lr)")
    p.add_argument("--seed", type=int, help="seed of initialisation, order, views and masks")
    p.add_argument("--image-size", type=int, help="resize images to this side in pixels (default: native size)")
    p.add_argument("--init-from", metavar="RUN", help="start from a run's weights (e.g. ImageNet-initialised)")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", help="run folder (default runs/<data>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_pretrain)
