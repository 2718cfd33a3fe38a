"""``medclass datasets``, ``models`` and ``recipes``: what there is to train on and with."""

from __future__ import annotations

import argparse
from typing import Any

from medclass.cli.common import print_table


def cmd_datasets(args: argparse.Namespace) -> int:
    from medclass.data.catalog import CATALOG

    rows = []
    for info in CATALOG.values():
        n = info.n_samples
        rows.append(
            [
                info.name,
                f"{info.ndim}D",
                info.task,
                info.channels,
                info.num_classes,
                f"{n['train']}/{n['val']}/{n['test']}",
                ",".join(str(s) for s in sorted(info.files)),
                info.license,
            ]
        )
    print_table(rows, ["name", "dims", "task", "channels", "classes", "train/val/test", "sizes", "licence"])
    return 0


def _param_count(name: str, dims: int, size: int) -> str:
    """Parameters of ``name`` (built on the meta device: no memory, no initialisation), e.g. ``11.2M``."""
    import torch

    from medclass.models import create_model, model_info

    kwargs = {"img_size": size} if model_info(name).takes_img_size else {}
    try:
        with torch.device("meta"):
            model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims, **kwargs)
    except Exception:  # noqa: BLE001 - a listing must not fail on one model
        return "?"
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def cmd_models(args: argparse.Namespace) -> int:
    from medclass.models import list_models, model_info

    rows = []
    for name in list_models(args.pattern):
        e = model_info(name)
        rows.append(
            [
                name,
                e.family,
                "/".join(f"{d}D" for d in e.spatial_dims),
                ",".join(map(str, e.sizes)),
                _param_count(name, e.spatial_dims[0], max(e.min_size, e.sizes[0])),
                f"ImageNet ({e.timm_arch})" if e.timm_arch else "-",
                e.description,
            ]
        )
    print_table(rows, ["name", "family", "dims", "sizes", "params", "pretrained", "description"])
    print("\nAny timm architecture is available as timm/<name> (e.g. timm/densenet121).")
    print("Classical baselines: classical/hog-svm, classical/lbp-svm, classical/sift-bovw-svm, classical/orb-bovw-svm.")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from medclass.config import find_recipe, list_recipes

    rows = [["auto", "chosen from the data: task, image size, dimensions, number of images"]]
    for name in list_recipes():
        first = find_recipe(name).read_text(encoding="utf-8").splitlines()[:1]
        rows.append([name, first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""])
    print_table(rows, ["recipe", "description"])
    return 0


def add_catalog_commands(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``datasets``, ``models`` and ``recipes`` to the ``medclass`` subcommand parser."""
    d = sub.add_parser("datasets", help="list the dataset catalog", parents=parents, formatter_class=formatter)
    d.set_defaults(func=cmd_datasets)
    m = sub.add_parser("models", help="list registered models", parents=parents, formatter_class=formatter)
    m.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    m.set_defaults(func=cmd_models)
    r = sub.add_parser("recipes", help="list the training recipes", parents=parents, formatter_class=formatter)
    r.set_defaults(func=cmd_recipes)
