"""The ``medclass`` command line: datasets, models, train, evaluate, predict (data commands: :mod:`cli_data`).

A user error prints one line on stderr naming the file and the problem and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

from medclass.errors import MedclassError


def _print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


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
    _print_table(rows, ["name", "dims", "task", "channels", "classes", "train/val/test", "sizes", "licence"])
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
    _print_table(rows, ["name", "family", "dims", "sizes", "params", "pretrained", "description"])
    print("\nAny timm architecture is available as timm/<name> (e.g. timm/densenet121).")
    print("Classical baselines: classical/hog-svm, classical/lbp-svm, classical/sift-bovw-svm, classical/orb-bovw-svm.")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": {"spec": args.data, "image_size": args.image_size, "window": args.window},
        "model": {"name": args.model, "init_from": args.init_from, "members": [] if args.model else None},
        "optim": {"lr": args.lr},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "device": args.device,
            "ensemble": args.ensemble_size,
        },
        "eval": {
            "operating_point": "sensitivity" if args.target_sensitivity is not None else None,
            "target_sensitivity": args.target_sensitivity,
        },
    }


def _summary(metrics: dict[str, Any], split: str = "test") -> None:
    from medclass.evaluate import reference_rows

    s = metrics["splits"][split]
    print(
        f"\n{metrics['dataset']} {split}: AUC {s['auc']:.4f} (95% CI {s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f}), "
        f"ACC {s['acc']:.4f} (95% CI {s['acc_ci'][0]:.3f}-{s['acc_ci'][1]:.3f}), n={s['n']}"
    )
    if "operating_point" in s and metrics["task"] == "binary":
        op = s["operating_point"]
        print(
            f"operating point (threshold {op['threshold']:.3f}, chosen on val): sensitivity {op['sensitivity']:.3f}, "
            f"specificity {op['specificity']:.3f}, ACC {op['acc']:.3f}"
        )
    rows = reference_rows(metrics["dataset"])
    if rows and split == "test":
        print("\nMedMNIST v2 test results (Yang et al. 2023) beside this run:")
        table = [[r["method"], f"{r['auc']:.3f}", f"{r['acc']:.3f}"] for r in rows]
        table.append(["medclass (this run)", f"{s['auc']:.3f}", f"{s['acc']:.3f}"])
        _print_table(table, ["method", "AUC", "ACC"])


def _load_args(cfg: Any) -> tuple:
    d = cfg.data
    return (d.spec, d.image_size, d.val_fraction, d.test_fraction, d.split_seed, tuple(d.file_options().items()))


def cmd_train(args: argparse.Namespace) -> int:
    from medclass.config import build_config
    from medclass.data.sources import load_configured
    from medclass.train.loop import resume_config

    if args.resume:
        if not args.out or not (Path(args.out) / "config.yaml").is_file():
            raise MedclassError(f"{args.out or '--out'}: nothing to resume (no config.yaml); give the run's --out DIR")
        cfg = resume_config(args.out)
    else:
        if not args.data:
            raise MedclassError("train: --data is required")
        cfg = build_config(recipe=args.recipe, config_file=args.config, overrides=_overrides(args))
    out = (
        Path(args.out)
        if args.out
        else Path("runs")
        / f"{Path(cfg.data.spec).stem.replace('@', '_')}-{cfg.model.name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"  # noqa: E501
    )
    dataset = load_configured(cfg.data)
    if not args.resume and cfg.per_modality:  # the recipe specialises by modality: now the data says which
        before = _load_args(cfg)
        cfg = build_config(
            recipe=args.recipe,
            config_file=args.config,
            overrides=_overrides(args),
            modality=dataset.extra.get("modality"),
            dataset=dataset.name,
        )
        if _load_args(cfg) != before:
            dataset = load_configured(cfg.data)
    if cfg.train.ensemble < 1:
        raise MedclassError(f"train.ensemble: a run needs at least one model, got {cfg.train.ensemble}")
    if cfg.model.members and cfg.train.ensemble == 1:
        cfg.train.ensemble = len(cfg.model.members)
        if cfg.train.ensemble == 1:  # a list of one: that model, alone
            cfg.model.name, cfg.model.members = cfg.model.members[0], []
    from medclass.train.ensemble import member_config

    member_cfgs = [member_config(cfg, i) for i in range(cfg.train.ensemble)] if cfg.train.ensemble > 1 else [cfg]
    names = [m.model.name for m in member_cfgs]
    if cfg.train.ensemble > 1 and any(n.lower().startswith("classical/") for n in names):
        raise MedclassError("train.ensemble: deep ensembles need neural networks, not classical models")
    if cfg.train.ensemble > 1 and cfg.model.members:  # an unknown or unfitting member fails now, not halfway
        from medclass.train.loop import model_meta

        for member in member_cfgs[: len(cfg.model.members)]:
            model_meta(member, dataset)
    cfg.name = out.name
    print(dataset.describe())
    steps = f" (at least {cfg.train.min_steps} steps)" if cfg.train.min_steps else ""
    members = f", a deep ensemble of {cfg.train.ensemble}" if cfg.train.ensemble > 1 else ""
    model = " + ".join(dict.fromkeys(names))
    print(f"model {model}{members}, recipe {cfg.recipe}, {cfg.train.epochs} epochs{steps}, output {out}")
    t0 = time.perf_counter()
    if cfg.train.ensemble > 1:
        metrics = _train_ensemble(cfg, dataset, out, resume=args.resume, quiet=args.quiet)
    else:
        metrics = _train_one(cfg, dataset, out, resume=args.resume, quiet=args.quiet)[0]
    print(f"training took {(time.perf_counter() - t0) / 60:.1f} min; run folder {out}")
    _summary(metrics)
    return 0


def _train_one(cfg: Any, dataset: Any, out: Path, *, resume: bool, quiet: bool) -> tuple[dict, Any, dict, list]:
    """Train one model into ``out``, fit what is fitted on validation, write metrics and report.

    Returns:
        ``(metrics, model, model.json content, epoch history)``.
    """
    from medclass.checkpoint import load_model
    from medclass.evaluate import read_history

    if cfg.model.name.lower().startswith("classical/"):
        from medclass.classical.fit import fit_classical
        from medclass.train.loop import model_meta

        history = fit_classical(cfg, dataset, out, meta=model_meta(cfg, dataset))
    else:
        from medclass.train.loop import fit

        history = fit(cfg, dataset, out, resume=resume, progress=not quiet)
    model, meta = load_model(out)
    history = read_history(out) or history
    return _finish_run(cfg, dataset, out, model, meta, history), model, meta, history


def _finish_run(cfg: Any, dataset: Any, out: Path, model: Any, meta: dict, history: list) -> dict[str, Any]:
    """Fit calibration, threshold, conformal sets and referral on validation; save the checkpoint and the report."""
    from medclass.checkpoint import save_model
    from medclass.evaluate import fit_post_training, write_evaluation

    metrics, plot, _ = fit_post_training(model, meta, dataset, cfg.eval, seed=cfg.train.seed)
    save_model(out, model, {k: v for k, v in meta.items() if k != "format_version"})
    title = f"medclass: {dataset.name} / {cfg.model.name}"
    write_evaluation(out, metrics, plot, history=history, config=cfg.to_dict(), title=title)
    return metrics


def _train_ensemble(cfg: Any, dataset: Any, out: Path, *, resume: bool, quiet: bool) -> dict[str, Any]:
    """Train ``cfg.train.ensemble`` members one after another (see :mod:`medclass.train.ensemble`); the metrics."""
    from medclass.checkpoint import load_model
    from medclass.config import dump_yaml
    from medclass.evaluate import read_history
    from medclass.train.ensemble import combine, ensemble_history, member_config, member_dir
    from medclass.train.loop import history_csv
    from medclass.utils.files import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(cfg))  # what --resume reads
    members, seeds, histories = [], [], []
    for i in range(cfg.train.ensemble):
        spent = sum(r["seconds"] for h in histories for r in h) / 60
        mcfg, mdir = member_config(cfg, i, spent), member_dir(out, i)
        if (mdir / "metrics.json").is_file():
            print(f"member {i + 1}/{cfg.train.ensemble}: finished earlier ({mdir})")
            model, meta = load_model(mdir)
            history = read_history(mdir)
        else:
            print(f"member {i + 1}/{cfg.train.ensemble}: seed {mcfg.train.seed}, output {mdir}")
            mcfg.name = f"{cfg.name}/members/{mdir.name}"
            member_resume = resume and (mdir / "config.yaml").is_file()
            _, model, meta, history = _train_one(mcfg, dataset, mdir, resume=member_resume, quiet=quiet)
        members.append((model, meta))
        seeds.append(mcfg.train.seed)
        histories.append(history)
    model, meta = combine(members, seeds)
    history = ensemble_history(histories)
    write_text(out / "history.csv", history_csv(history))
    return _finish_run(cfg, dataset, out, model, meta, history)


def _split_options(run: Path) -> dict[str, Any]:
    """The run's split settings, so a folder or manifest is split the way it was for training."""
    from medclass.config import read_yaml

    cfg = read_yaml(run / "config.yaml").get("data", {}) if (run / "config.yaml").is_file() else {}
    out = {"val": cfg.get("val_fraction", 0.1), "test": cfg.get("test_fraction", 0.2), "seed": cfg.get("split_seed", 0)}
    if "dedup" in cfg:
        out["dedup"] = bool(cfg["dedup"])
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medclass.config import EvalConfig
    from medclass.data.sources import load_dataset
    from medclass.evaluate import evaluate_model, fit_post_training, write_evaluation
    from medclass.predict import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, ensemble=args.ensemble, mc_samples=args.mc_dropout)
    dataset = load_dataset(args.data, **_split_options(Path(args.checkpoint)), **predictor.prep.get("decode", {}))
    for split in dataset.splits.values():
        split.images = predictor.prepare(split.images.numpy(), where=args.data)
    splits = tuple(args.split)
    if args.ensemble or args.mc_dropout:  # a new model: calibration, threshold and sets are fitted on validation
        if "val" not in dataset.splits or len(dataset.splits["val"]) == 0:
            raise MedclassError(f"{args.data}: an ensemble or MC dropout needs a validation split to fit on")
        eval_cfg = EvalConfig(n_bootstrap=args.n_bootstrap)
        metrics, plot, _ = fit_post_training(predictor.model, predictor.meta, dataset, eval_cfg, splits=splits)
        predictor = type(predictor)(predictor.model, predictor.meta)
    else:
        metrics, plot, _ = evaluate_model(
            predictor.model,
            predictor.meta,
            dataset,
            splits=splits,
            threshold=predictor.threshold,
            n_bootstrap=args.n_bootstrap,
        )
    if args.corruptions:
        metrics["robustness"] = _robustness(predictor, dataset)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{Path(args.data).stem.replace('@', '_')}"
    write_evaluation(out, metrics, plot, title=f"medclass evaluation: {dataset.name}")
    for s in splits:
        _summary(metrics, s)
    if args.corruptions:
        rob = metrics["robustness"]
        print(f"\nrobustness (test AUC; clean {rob['clean']['auc']:.3f}):")
        table = [[n, *[f"{m['auc']:.3f}" for m in sev]] for n, sev in rob["corruptions"].items()]
        _print_table(table, ["corruption", "1", "2", "3", "4", "5"])
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0


def _robustness(predictor: Any, dataset: Any) -> dict[str, Any]:
    """Test AUC/ACC of ``predictor`` under every corruption and severity."""
    import warnings

    from medclass.metrics import medmnist
    from medclass.trust.corruptions import robustness

    test = dataset.splits["test"]
    t = predictor.threshold if predictor.task == "binary" and predictor.threshold is not None else 0.5

    def score(images: Any) -> dict[str, float]:
        probs, _ = predictor.predict_array(images.numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {
                "auc": float(medmnist.auc(test.labels, probs, predictor.task)),
                "acc": float(medmnist.acc(test.labels, probs, predictor.task, threshold=float(t))),
            }

    return robustness(score, test.images)


def cmd_predict(args: argparse.Namespace) -> int:
    from medclass.predict import Predictor
    from medclass.utils.files import write_text

    predictor = Predictor.from_checkpoint(
        args.checkpoint, ensemble=args.ensemble, mc_samples=args.mc_dropout, engine=args.engine, onnx_file=args.onnx
    )
    try:
        pred = predictor.predict_paths(args.inputs, alpha=args.alpha)
    except ValueError as err:  # an alpha below the stored levels
        raise MedclassError(f"--alpha: {err}") from None
    names = predictor.label_names
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    extra = ["set", "refer"] if pred.sets is not None else []
    writer.writerow(["source", *[f"prob_{n}" for n in names], "label", *extra])
    for i, (src, p, lab) in enumerate(zip(pred.sources, pred.probs, pred.labels, strict=True)):
        label = (
            ";".join(n for n, v in zip(names, lab, strict=True) if v)
            if predictor.task == "multilabel"
            else names[int(lab)]
        )
        row = [src, *[f"{v:.6f}" for v in p], label]
        if pred.sets is not None and pred.refer is not None:
            row += [";".join(n for n, v in zip(names, pred.sets[i], strict=True) if v), int(pred.refer[i])]
        writer.writerow(row)
    if args.out:
        write_text(args.out, buf.getvalue())
        print(f"wrote {len(pred.sources)} predictions to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def _add_uncertainty_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more runs to average with --checkpoint (deep ensemble)",
    )
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N", help="Monte Carlo dropout passes per model")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medclass`` command."""
    p = argparse.ArgumentParser(prog="medclass", description="Medical image classification on a plain CPU.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("datasets", help="list the dataset catalog").set_defaults(func=cmd_datasets)
    m = sub.add_parser("models", help="list registered models")
    m.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train a model and evaluate it")
    t.add_argument("--data", help="catalog name (pneumoniamnist, breastmnist@64), .npz, folder or .csv manifest")
    t.add_argument("--model", help="registry name or timm/<name>")
    t.add_argument("--recipe", default="default", help="recipe name in configs/recipes or a YAML path")
    t.add_argument("--init-from", help="start from a medclass run's weights (transfer between datasets)")
    t.add_argument("--config", help="YAML file overriding the recipe")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--image-size", type=int)
    t.add_argument("--window", help="DICOM window preset (ct_lung, ct_mediastinum, ct_bone, ct_brain, ct_abdomen)")
    t.add_argument("--seed", type=int)
    t.add_argument(
        "--ensemble-size", type=int, metavar="K", help="train K models and keep their average (a deep ensemble)"
    )
    t.add_argument("--device", help="auto (a CUDA GPU when there is one), cpu or cuda[:N]")
    t.add_argument("--target-sensitivity", type=float, help="choose the operating point for this sensitivity on val")
    t.add_argument("--out", help="run folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run on data")
    e.add_argument("--checkpoint", required=True, help="run folder")
    e.add_argument("--data", required=True)
    e.add_argument("--split", nargs="+", default=["test"], choices=["train", "val", "test"])
    e.add_argument("--n-bootstrap", type=int, default=1000)
    e.add_argument("--out", help="output folder (default RUN/eval-<data>)")
    e.add_argument(
        "--corruptions",
        action="store_true",
        help="also score the test split under noise, blur, contrast, brightness, JPEG and pixelation at 5 severities",
    )
    _add_uncertainty_options(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict image files, folders, .npy or .npz arrays")
    pr.add_argument("--checkpoint", required=True, help="run folder")
    pr.add_argument("inputs", nargs="+")
    pr.add_argument("--out", help="CSV file (default: standard output)")
    pr.add_argument(
        "--alpha", type=float, help="miss rate of the conformal prediction sets (default: the checkpoint's, 0.1)"
    )
    _add_uncertainty_options(pr)
    pr.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"])
    pr.add_argument("--onnx", help="exported model for --engine onnxruntime (default RUN/model.onnx, made if missing)")
    pr.set_defaults(func=cmd_predict)

    from medclass.cli_data import add_data_commands
    from medclass.cli_deploy import add_deploy_commands
    from medclass.cli_explain import add_explain_command

    add_data_commands(sub)
    add_explain_command(sub)
    add_deploy_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MedclassError as err:
        print(f"medclass: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medclass: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
