"""``medclass explain``: saliency maps for the inputs of a trained run, with the randomisation check run on them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import MedclassError


def _targets(arg: str | None, predictor: Any, probs: np.ndarray) -> np.ndarray:
    """Class index per image: ``--target`` (a class name or index) or the model's decision."""
    from medclass.explain.methods import default_targets
    from medclass.metrics.positive import positive_index

    if arg is None:
        return default_targets(
            probs, predictor.task, predictor.threshold, positive_index=positive_index(predictor.meta)
        )
    names = predictor.label_names
    if arg in names:
        index = names.index(arg)
    elif arg.isdigit() and int(arg) < len(names):
        index = int(arg)
    else:
        raise MedclassError(f"--target: '{arg}' is not a class of this model ({', '.join(names)})")
    return np.full(len(probs), index)


def cmd_explain(args: argparse.Namespace) -> int:
    from medclass.explain.fields import field_contributions, with_fields
    from medclass.explain.methods import saliency
    from medclass.explain.output import safe_name, write_explanation
    from medclass.explain.sanity import RANDOMISATION_LIMIT, randomisation_check
    from medclass.inference import to_input
    from medclass.predict import Predictor, clinical_for
    from medclass.utils.files import write_json

    predictor = Predictor.from_checkpoint(args.checkpoint)
    images, sources = predictor.load_inputs(args.inputs)
    tabular = clinical_for(sources, args.clinical, predictor.clinical_fields) if args.clinical else None
    probs = predictor.probs(images, tabular=tabular)
    targets = _targets(args.target, predictor, probs)
    fields = list(predictor.clinical_fields)
    contributions = field_contributions(predictor, images, tabular, targets) if fields else None
    x = to_input(images, predictor.prep)
    if fields:  # one image at a time, with its own fields bound (ScoreCAM's masks and occlusion's batches share them)
        encoded = predictor.encode_tabular(tabular, len(x))
        nets = [with_fields(predictor.model, encoded[i : i + 1]) for i in range(len(x))]
        step = 1
    else:
        nets, step = [predictor.model], args.batch_size
    maps = np.concatenate(
        [
            saliency(nets[i if fields else 0], predictor.task, x[i : i + step], targets[i : i + step], args.method)
            for i in range(0, len(x), step)
        ]
    )
    n_check = min(len(x), 1 if fields else 16)
    check = randomisation_check(nets[0], predictor.task, x[:n_check], targets[:n_check], args.method)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (src, t) in enumerate(zip(sources, targets, strict=True)):
        stem = safe_name(src, i)
        png, npy = write_explanation(out, stem, images[i].numpy(), maps[i])
        records.append(
            {
                "source": src,
                "target": predictor.label_names[int(t)],
                "prob": float(probs[i, int(t)]),
                "png": png.name,
                "npy": npy.name,
            }
        )
        if contributions is not None:
            given = tabular[i] if tabular else {}
            records[-1]["fields"] = {
                f: {"value": given.get(f), "contribution": round(float(contributions[i, j]), 4)}
                for j, f in enumerate(fields)
            }
    summary = {
        "method": args.method,
        "checkpoint": str(args.checkpoint),
        "randomisation": {
            "images": n_check,
            "mean_spearman": check["mean"],
            "limit": RANDOMISATION_LIMIT,
            "passed": check["passed"],
        },
        "explanations": records,
    }
    write_json(out / "explanations.json", summary)
    print(f"wrote {len(records)} explanations ({args.method}) to {out}")
    if contributions is not None:
        print("clinical fields: change in P(target) when the field is withheld (positive: the field raised it)")
        for r in records:
            parts = ", ".join(f"{f}={v['value']!s} {v['contribution']:+.3f}" for f, v in r["fields"].items())
            print(f"  {r['source']}: {r['target']} {r['prob']:.3f}; {parts}")
    verdict = "passed" if check["passed"] else "FAILED"
    print(
        f"randomisation check {verdict}: Spearman correlation with a randomised model's maps {check['mean']:.2f} "
        f"(on {n_check} images; must be below {RANDOMISATION_LIMIT})"
    )
    if not check["passed"]:
        print(
            f"warning: {args.method} maps barely depend on the trained weights here; do not read them as the "
            "model's reasons",
            file=sys.stderr,
        )
    return 0


#: The saliency methods (:data:`medclass.explain.methods.METHODS`), named here so that building the parser
#: imports no model code.
METHODS = ("gradcam", "gradcam++", "scorecam", "integrated-gradients", "occlusion")


def add_explain_command(sub: Any, parents: list[argparse.ArgumentParser], formatter: type) -> None:
    """Add ``explain`` to the ``medclass`` subcommand parser."""
    ex = sub.add_parser(
        "explain",
        help="saliency maps (PNG overlays and .npy) for images, with a sanity check",
        parents=parents,
        formatter_class=formatter,
    )
    ex.add_argument("--checkpoint", required=True, help="run folder")
    ex.add_argument("inputs", nargs="+", help="image files, DICOM, folders, .npy or .npz")
    ex.add_argument("--method", default="gradcam", choices=METHODS, help="saliency method")
    ex.add_argument("--target", help="class name or index to explain (default: the model's decision per image)")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--batch-size", type=int, default=32, help="images per saliency batch")
    ex.add_argument(
        "--clinical",
        metavar="CSV",
        help="clinical fields of the inputs (a model trained with --tabular), matched by file name as for predict: "
        "the prediction uses them and each field's contribution is written beside the heat map",
    )
    ex.set_defaults(func=cmd_explain)
