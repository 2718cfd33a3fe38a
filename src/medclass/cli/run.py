"""``medclass train``, ``evaluate`` and ``predict``: thin layers over :mod:`medclass.api` and the engines."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from medclass.cli.common import print_table, set_options
from medclass.errors import MedclassError


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The values the user gave on the command line, as :func:`medclass.api.train` options (flags, then ``--set``)."""
    options: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "image_size": args.image_size,
        "window": args.window,
        "device": args.device,
        "ensemble_size": args.ensemble_size,
        "init_from": args.init_from,
        "target_sensitivity": args.target_sensitivity,
        "positive_class": args.positive_class,
        "label_column": args.label_column,
        "group_column": args.group_column,
        "group_by": args.group_by,
        "labels": args.labels,
        "label_seed": args.label_seed,
        "tabular": args.tabular,
        "fusion": args.fusion,
        "semi": args.semi,
        "unlabeled": args.unlabeled,
    }
    options = {k: v for k, v in options.items() if v is not None}
    options.update(set_options(args.set))  # null given on purpose stays null
    return options


def _columns(text: str) -> list[str]:
    """``--tabular age,sex`` -> ``["age", "sex"]``."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise argparse.ArgumentTypeError("expected column names separated by commas, e.g. age,sex")
    return columns


def cmd_train(args: argparse.Namespace) -> int:
    import medclass.api as api

    if not args.resume and not args.data:
        raise MedclassError("train: --data is required")
    if args.nproc:
        from medclass.training.distributed import launch

        given = args.argv[args.argv.index("train") + 1 :]
        return launch(["train", *_without_nproc(given)], args.nproc)
    run = api.train(
        args.data,
        model=args.model,
        recipe=args.recipe,
        out=args.out,
        config=args.config,
        resume=args.resume,
        progress=not args.quiet,
        **({} if args.resume else _options(args)),
    )
    if run is not None:  # None: a torchrun rank other than 0
        print_summary(run.metrics)
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``train``'s arguments without ``--nproc N`` (each process of the job trains, none launches)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def print_summary(metrics: dict[str, Any], split: str = "test") -> None:
    from medclass.evaluate import reference_rows

    s = metrics["splits"][split]
    print(
        f"\n{metrics['dataset']} {split}: AUC {s['auc']:.4f} (95% CI {s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f}), "
        f"ACC {s['acc']:.4f} (95% CI {s['acc_ci'][0]:.3f}-{s['acc_ci'][1]:.3f}), n={s['n']}"
    )
    if c := s.get("cases"):
        print(
            f"{metrics['dataset']} {split}, one prediction per case (mean logits, {c['images_per_case']:.2f} images): "
            f"AUC {c['auc']:.4f}, ACC {c['acc']:.4f}, balanced ACC {c['balanced_accuracy']:.4f}, {c['n_cases']} cases"
        )
    if "operating_point" in s and metrics["task"] == "binary":
        op, pos = s["operating_point"], metrics.get("positive_class", metrics["label_names"][-1])
        print(
            f"operating point for {pos} (threshold {op['threshold']:.3f} on P({pos}), chosen on val): "
            f"sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}, ACC {op['acc']:.3f}"
        )
    rows = reference_rows(metrics["dataset"])
    if rows and split == "test":
        print("\nMedMNIST v2 test results (Yang et al. 2023) beside this run:")
        table = [[r["method"], f"{r['auc']:.3f}", f"{r['acc']:.3f}"] for r in rows]
        table.append(["medclass (this run)", f"{s['auc']:.3f}", f"{s['acc']:.3f}"])
        print_table(table, ["method", "AUC", "ACC"])


def _split_options(run: Path, data: str) -> dict[str, Any]:
    """The run's split settings, so a folder or manifest is split (and a manifest labelled) as it was for training."""
    from medclass.config import read_yaml

    cfg = read_yaml(run / "config.yaml").get("data", {}) if (run / "config.yaml").is_file() else {}
    out = {"val": cfg.get("val_fraction", 0.1), "test": cfg.get("test_fraction", 0.2), "seed": cfg.get("split_seed", 0)}
    if "dedup" in cfg:
        out["dedup"] = bool(cfg["dedup"])
    if Path(data).suffix.lower() == ".csv":
        out.update({k: cfg[k] for k in ("label_column", "group_column", "tabular", "group_by") if cfg.get(k)})
    return out


def cmd_probe(args: argparse.Namespace) -> int:
    """``evaluate --probe``: the run's frozen encoder measured with linear and/or k-NN probes."""
    import medclass.api as api
    from medclass.utils.files import write_json

    result = api.probe(args.checkpoint, args.data, tuple(args.probe), labels=args.labels, label_seed=args.label_seed)
    rows = [
        [kind, split, f"{m['auc']:.4f}", f"{m['acc']:.4f}", str(m["n"])]
        for kind, splits in result.items()
        for split, m in splits.items()
        if split in args.split or split == "val"
    ]
    print_table(rows, ["probe", "split", "AUC", "ACC", "n"])
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"probe-{Path(args.data).stem}"
    write_json(out / "probe.json", {"data": Path(args.data).name, "labels": args.labels, "probe": result})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.probe:
        return cmd_probe(args)
    from medclass.config import EvalConfig
    from medclass.data.sources import load_dataset
    from medclass.evaluate import evaluate_model, fit_post_training, write_evaluation
    from medclass.predict import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, ensemble=args.ensemble, mc_samples=args.mc_dropout)
    options = _split_options(Path(args.checkpoint), args.data)
    if args.group_by:
        options["group_by"] = args.group_by
    dataset = load_dataset(args.data, **options, **predictor.prep.get("decode", {}))
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
        print_summary(metrics, s)
    if args.corruptions:
        rob = metrics["robustness"]
        print(f"\nrobustness (test AUC; clean {rob['clean']['auc']:.3f}):")
        table = [[n, *[f"{m['auc']:.3f}" for m in sev]] for n, sev in rob["corruptions"].items()]
        print_table(table, ["corruption", "1", "2", "3", "4", "5"])
    print(f"\nwrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0


def _robustness(predictor: Any, dataset: Any) -> dict[str, Any]:
    """Test AUC/ACC of ``predictor`` under every corruption and severity."""
    import warnings

    from medclass.metrics import medmnist
    from medclass.metrics.positive import positive_index
    from medclass.trust.corruptions import robustness

    test = dataset.splits["test"]
    t = predictor.threshold if predictor.task == "binary" and predictor.threshold is not None else 0.5
    pos = positive_index(predictor.meta)

    def score(images: Any) -> dict[str, float]:
        probs, _ = predictor.predict_array(images.numpy(), tabular=test.tabular if predictor.schema else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {
                "auc": float(medmnist.auc(test.labels, probs, predictor.task)),
                "acc": float(medmnist.acc(test.labels, probs, predictor.task, threshold=float(t), positive_index=pos)),
            }

    return robustness(score, test.images)


def cmd_predict(args: argparse.Namespace) -> int:
    from medclass.predict import Predictor
    from medclass.utils.files import write_text

    predictor = Predictor.from_checkpoint(
        args.checkpoint, ensemble=args.ensemble, mc_samples=args.mc_dropout, engine=args.engine, onnx_file=args.onnx
    )
    try:
        records = predictor.predict(args.inputs, alpha=args.alpha, tabular=args.clinical)
    except ValueError as err:  # an alpha below the stored levels
        raise MedclassError(f"--alpha: {err}") from None
    names = predictor.label_names
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    extra = ["set", "refer"] if records and "set" in records[0] else []
    writer.writerow(["source", *[f"prob_{n}" for n in names], "label", *extra])
    for rec in records:
        label = ";".join(rec["label"]) if isinstance(rec["label"], list) else rec["label"]
        row = [rec["source"], *[f"{rec['probs'][n]:.6f}" for n in names], label]
        if extra:
            row += [";".join(rec["set"]), int(rec["refer"])]
        writer.writerow(row)
    if args.out:
        write_text(args.out, buf.getvalue())
        print(f"wrote {len(records)} predictions to {args.out}", file=sys.stderr)
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


def add_run_commands(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``train``, ``evaluate`` and ``predict`` to the ``medclass`` subcommand parser."""
    kw: dict[str, Any] = {"parents": parents, "formatter_class": formatter}
    t = sub.add_parser("train", help="train a model, calibrate it and evaluate it", **kw)
    t.add_argument("--data", help="catalog name (pneumoniamnist, breastmnist@64), .npz, folder or .csv manifest")
    t.add_argument("--model", help="registry name or timm/<name> (default: the recipe's; see medclass models)")
    t.add_argument("--recipe", default="auto", help="auto (chosen from the data), default, best, hires or a YAML path")
    t.add_argument("--config", help="YAML file overriding the recipe")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any config key, e.g. train.ema=0 (repeat)")
    t.add_argument("--epochs", type=int, help="passes over the training split (exactly this many)")
    t.add_argument("--batch-size", type=int, help="images per optimiser step")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--image-size", type=int, help="resize images to this side in pixels (default: native size)")
    t.add_argument("--seed", type=int, help="seed of initialisation, order and augmentation (the split has its own)")
    t.add_argument("--init-from", metavar="RUN", help="start from a medclass run's weights (transfer between datasets)")
    t.add_argument("--window", help="DICOM window preset (ct_lung, ct_mediastinum, ct_bone, ct_brain, ct_abdomen)")
    t.add_argument("--positive-class", metavar="NAME", help="the finding class of a binary task (folders, manifests)")
    t.add_argument("--label-column", metavar="COL", help="manifest column holding the label (default: label)")
    t.add_argument(
        "--group-column", metavar="COL", help="manifest column kept in one split (default: patient_id, else group_id)"
    )
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with N processes on this machine (torchrun, DistributedDataParallel; --batch-size is the global "
        "batch); for several machines run torchrun yourself, see the README",
    )
    t.add_argument(
        "--group-by",
        metavar="COL",
        help="manifest column naming each image's case (lesion, study, patient): one prediction per case, the mean "
        "of its images' logits, reported beside the image-level metrics",
    )
    t.add_argument(
        "--tabular",
        type=_columns,
        metavar="COL,COL",
        help="manifest columns of clinical fields given to the model beside each image (e.g. age,sex)",
    )
    t.add_argument(
        "--fusion",
        choices=["none", "concat", "film", "late", "tabular_only"],
        help="how the clinical fields join the image (default concat with --tabular)",
    )
    t.add_argument(
        "--ensemble-size", type=int, metavar="K", help="train K models and keep their average (a deep ensemble)"
    )
    t.add_argument(
        "--labels", type=float, metavar="N|FRACTION", help="keep the labels of N training images (or a share below 1)"
    )
    t.add_argument("--label-seed", type=int, help="seed of the stratified, patient-grouped labelled subset (default 0)")
    t.add_argument(
        "--semi",
        choices=["none", "fixmatch", "meanteacher", "pseudolabel"],
        help="semi-supervised method for the unlabelled images (default none)",
    )
    t.add_argument(
        "--unlabeled", action="append", metavar="SPEC", help="more unlabelled data for --semi (repeat; labels ignored)"
    )
    t.add_argument("--device", help="auto (a CUDA GPU when there is one), cpu or cuda[:N]")
    t.add_argument("--target-sensitivity", type=float, help="choose the operating point for this sensitivity on val")
    t.add_argument("--out", help="run folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run on data", **kw)
    e.add_argument("--checkpoint", required=True, help="run folder")
    e.add_argument("--data", required=True, help="catalog name, .npz, folder or .csv manifest")
    e.add_argument("--split", nargs="+", default=["test"], choices=["train", "val", "test"], help="splits to score")
    e.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    e.add_argument("--out", help="output folder (default RUN/eval-<data>)")
    e.add_argument(
        "--group-by",
        metavar="COL",
        help="manifest column naming each image's case: case-level metrics too (default: the run's data.group_by)",
    )
    e.add_argument(
        "--corruptions",
        action="store_true",
        help="also score the test split under noise, blur, contrast, brightness, JPEG and pixelation at 5 severities",
    )
    e.add_argument(
        "--probe",
        nargs="+",
        choices=["linear", "knn"],
        help="measure the run's frozen encoder (e.g. a pretraining run) with these probes instead",
    )
    e.add_argument("--labels", type=float, metavar="N|FRACTION", help="--probe: fit on this many training labels")
    e.add_argument("--label-seed", type=int, default=0, help="--probe: seed of that labelled subset")
    _add_uncertainty_options(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict image files, folders, .npy or .npz arrays", **kw)
    pr.add_argument("--checkpoint", required=True, help="run folder")
    pr.add_argument("inputs", nargs="+", help="image files, DICOM, NIfTI, folders, .npy or .npz")
    pr.add_argument("--out", help="CSV file (default: standard output)")
    pr.add_argument(
        "--alpha", type=float, help="miss rate of the conformal prediction sets (default: the checkpoint's, 0.1)"
    )
    pr.add_argument(
        "--clinical",
        metavar="FILE.csv",
        help="clinical fields of the inputs (a model trained with --tabular): a CSV whose path or file column "
        "names the images, matched by file name; without it every field is missing",
    )
    _add_uncertainty_options(pr)
    pr.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"], help="inference engine")
    pr.add_argument("--onnx", help="exported model for --engine onnxruntime (default RUN/model.onnx, made if missing)")
    pr.set_defaults(func=cmd_predict)
