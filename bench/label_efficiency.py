"""Label efficiency: how much of each dataset's labels five ways of training need, on the CPU.

For each dataset, label fraction and seed:

* ``supervised``: ``medclass.train(data, labels=L, label_seed=S, seed=S)`` (the default command, recipe auto);
* ``probe``: a linear probe of a frozen pretrained encoder fitted on the same ``L`` labels
  (``medclass.probe(run, data, kinds=("linear",), labels=L, label_seed=S)``);
* ``finetune``: ``medclass.train(..., init_from=<pretraining run>)``;
* ``semi``: ``medclass.train(..., semi="fixmatch")``, the other training images unlabelled;
* ``pretrain+semi``: ``medclass.train(..., semi="fixmatch", init_from=<pretraining run>)``.

One pretraining run per dataset and seed (``medclass.pretrain(data, METHOD, seed=S)``, METHOD ``simclr`` for
2D and ``mim`` for 3D unless ``--pretrain-method``) is shared by every fraction. For volumes ``mim`` replaced
``slice_order``, chosen on validation: fine-tuned on AdrenalMNIST3D's 10% (seed 0) it reached val AUC 0.890
against slice order's 0.797 (``BENCHMARKS.md``, "Learning from few labels"). A fraction of
``1`` means all labels (``labels=None``; the semi-supervised methods have nothing unlabelled then and are
skipped); a fraction above 1 is a number of labelled images. Per run the test AUC/ACC, validation
AUC/ACC, the labels used, the training minutes (the sum of ``history.csv`` ``seconds``; for the probe the
time of fitting it) and the pretraining minutes (the pretraining run's ``pretrain_minutes``) are saved
to the results file after every run; runs already recorded are skipped (a pretrained method's run is
redone when the recorded pretraining method or epochs differ). A run folder that already holds
``metrics.json`` is read, not trained again.

``BENCHMARKS.md`` (section ``label-efficiency``, written by ``label_efficiency_report.py``) and the figure are
rewritten only when the results file is inside ``bench/results/`` and ``--no-render`` is not given; a results
file elsewhere (a smoke run) gets the figure and the section beside it (``FILE.png``, ``FILE.md``) and leaves
``BENCHMARKS.md`` alone. A failed run is recorded with its error and skipped like the others (delete its entry
to retry). Which method is "best" at a fraction is decided by mean validation AUC; its test figures are then
reported.

Usage:
    OMP_NUM_THREADS=1 MEDCLASS_DATA_DIR=../shared/data/medmnist python bench/label_efficiency.py \
        [--datasets pneumoniamnist breastmnist adrenalmnist3d] [--fractions 0.1 1] [--seeds 0 1 2] \
        [--methods supervised probe finetune semi pretrain+semi] [--pretrain-epochs 30] \
        [--pretrain-method simclr] [--extra train.batch_size=16] [--out runs/bench-label-efficiency]
    python bench/label_efficiency.py --render        # only rewrite BENCHMARKS.md from saved results
    # smoke run: tiny settings, results and figure in /tmp, BENCHMARKS.md untouched
    OMP_NUM_THREADS=1 MEDCLASS_DATA_DIR=../shared/data/medmnist python bench/label_efficiency.py \
        --datasets breastmnist --fractions 0.25 --seeds 0 --pretrain-epochs 1 --extra train.epochs=1 \
        --extra train.min_steps=0 --out /tmp/le_smoke --results /tmp/le_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from label_efficiency_report import (  # noqa: E402
    FRACTIONS,
    METHODS,
    RESULTS_DIR,
    fraction_label,
    is_3d,
    renders_benchmarks,
    write_outputs,
)
from machine import cpu_description  # noqa: E402

RESULTS = RESULTS_DIR / "label-efficiency.json"
PRETRAINED = {"probe", "finetune", "pretrain+semi"}  # methods that need the pretraining run
SEMI = {"semi", "pretrain+semi"}


# ------------------------------------------------------------------------------------------ helpers


def fraction_key(fraction: float) -> str:
    """The results key of a fraction: ``0.1`` -> ``"0.1"``, ``1.0`` -> ``"1"`` (all labels), ``50`` -> ``"50"``."""
    return f"{fraction:g}"


def labels_arg(fraction: float) -> float | int | None:
    """The ``labels=`` value of a fraction: ``None`` for all labels (1), a count above 1, else the share."""
    if fraction == 1:
        return None
    if fraction > 1:
        if fraction != int(fraction):
            raise ValueError(f"{fraction}: a label count must be whole")
        return int(fraction)
    if fraction <= 0:
        raise ValueError(f"{fraction}: a label fraction must be positive")
    return fraction


def parse_extra(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as dotted overrides, each value read as YAML (``0`` -> int, ``null`` -> None)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--extra {item!r}: expected a dotted KEY=VALUE such as train.batch_size=16")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _rel(path: Path) -> str:
    """A run folder as recorded: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(path: Path, saved: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------ measuring


class Bench:
    """The runs of one invocation: data, seeds and settings from the command line, results saved after each run.

    Args:
        args: The parsed command line.
        command: The command recorded with the results.
    """

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        import torch

        self.args = args
        self.results = Path(args.results)
        self.out = Path(args.out)
        self.extra = parse_extra(args.extra)
        self.command = command
        self.machine = {
            "cpu": cpu_description(),
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
        }
        self._splits: dict[str, Any] = {}

    def save(self, dataset: str, where: tuple[str, ...], row: dict) -> None:
        """Store ``row`` under ``saved[dataset][where...]`` (re-reading the file first) and rewrite the outputs."""
        saved = _load(self.results)  # another process (one per dataset) may have written meanwhile
        entry = saved.setdefault(dataset, {})
        entry.update(command=self.command, machine=self.machine)
        node = entry
        for part in where[:-1]:
            node = node.setdefault(part, {})
        node[where[-1]] = row
        _save(self.results, saved)
        if not self.args.no_render:
            write_outputs(saved, self.results, benchmarks=renders_benchmarks(self.results))

    def train_split(self, dataset: str) -> Any:
        """The dataset's training split and task (loaded once): to count the labels a run used."""
        if dataset not in self._splits:
            from medclass.data.sources import load_dataset

            data = load_dataset(dataset)
            self._splits[dataset] = (data.splits["train"], data.task, data.num_classes)
        return self._splits[dataset]

    def labels_used(self, dataset: str, fraction: float, seed: int) -> int:
        """Training images whose label a fraction keeps (the draw ``data.labels``/``probe(labels=)`` make)."""
        split, task, num_classes = self.train_split(dataset)
        labels = labels_arg(fraction)
        if labels is None:
            return len(split)
        from medclass.data.labelled import label_subset

        return len(label_subset(split, labels, seed, task, num_classes)[0])

    def pretrain_method(self, dataset: str) -> str:
        """``--pretrain-method``, else ``mim`` for volumes and ``simclr`` for images."""
        return self.args.pretrain_method or ("mim" if is_3d(dataset) else "simclr")

    def pretrain_tag(self, dataset: str) -> str:
        """The pretraining in run folder names (``simclr``, ``simclr-e5``): a new encoder gets new folders."""
        epochs = self.args.pretrain_epochs
        return self.pretrain_method(dataset) + (f"-e{epochs}" if epochs else "")

    def pretraining(self, dataset: str, seed: int) -> tuple[Path, dict]:
        """The dataset's pretraining run for ``seed`` (trained once, then read) and its record."""
        import medclass

        method = self.pretrain_method(dataset)
        epochs = self.args.pretrain_epochs
        run = self.out / f"{dataset}-pretrain-{self.pretrain_tag(dataset)}-s{seed}"
        record = _load(self.results).get(dataset, {}).get("pretrain", {}).get(str(seed))
        if record and record.get("run") == _rel(run) and (run / "metrics.json").is_file():
            return run, record
        if not (run / "metrics.json").is_file():
            print(f"[label-efficiency] {dataset} pretrain {method} seed {seed}", flush=True)
            options = {"seed": seed} | ({"epochs": epochs} if epochs else {})
            medclass.pretrain(dataset, method, out=run, progress=False, **options)
        metrics = json.loads((run / "metrics.json").read_text())
        record = {
            "run": _rel(run),
            "method": metrics.get("method", method),
            "epochs": metrics.get("epochs"),
            "minutes": metrics.get("pretrain_minutes"),
            "probe_all": metrics.get("probe", {}).get("linear"),
        }
        self.save(dataset, ("pretrain", str(seed)), record)
        return run, record

    def measure(self, dataset: str, method: str, fraction: float, seed: int) -> dict:
        """One run of ``method``: its scores, labels used and minutes."""
        import medclass

        labels = labels_arg(fraction)
        row: dict[str, Any] = {}
        pre = None
        if method in PRETRAINED:
            pre_run, pre = self.pretraining(dataset, seed)
            row.update(pretrain_minutes=pre["minutes"], pretrain_method=pre["method"], pretrain_epochs=pre["epochs"])
        if method == "probe":
            t0 = time.perf_counter()
            probe = medclass.probe(pre_run, dataset, kinds=("linear",), labels=labels, label_seed=seed)["linear"]
            row.update(
                test_auc=probe["test"]["auc"],
                test_acc=probe["test"]["acc"],
                val_auc=probe["val"]["auc"],
                val_acc=probe["val"]["acc"],
                probe_features=probe["val"].get("features"),  # chosen on validation, as is the L2 strength
                probe_c=probe["val"].get("c"),
                train_minutes=(time.perf_counter() - t0) / 60,
                labels=self.labels_used(dataset, fraction, seed),
                run=_rel(pre_run),
            )
            return row
        tag = method.replace("+", "-") + (f"-{self.pretrain_tag(dataset)}" if pre is not None else "")
        out = self.out / f"{dataset}-{tag}-f{fraction_key(fraction)}-s{seed}"
        options: dict[str, Any] = {"labels": labels, "label_seed": seed, "seed": seed, **self.extra}
        if method in SEMI:
            options["semi"] = "fixmatch"
        if pre is not None:
            options["init_from"] = str(pre_run)
        if not (out / "metrics.json").is_file():
            if (out / "state.json").is_file():  # a killed bench goes on where it stopped
                medclass.train(dataset, out=out, resume=True, progress=False)
            else:
                medclass.train(dataset, out=out, progress=False, **options)
        metrics = json.loads((out / "metrics.json").read_text())
        hist = (out / "history.csv").read_text().splitlines()
        col = hist[0].split(",").index("seconds")
        test, val = metrics["splits"]["test"], metrics["splits"]["val"]
        used = metrics.get("labels", {}).get("n")
        row.update(
            test_auc=test["auc"],
            test_acc=test["acc"],
            val_auc=val["auc"],
            val_acc=val["acc"],
            train_minutes=sum(float(r.split(",")[col]) for r in hist[1:]) / 60,
            labels=used if used is not None else len(self.train_split(dataset)[0]),
            run=_rel(out),
        )
        return row

    def recorded(self, dataset: str, method: str, key: str, seed: int) -> bool:
        """Whether the run is in the results already (with the pretraining this invocation would use)."""
        row = _load(self.results).get(dataset, {}).get("runs", {}).get(method, {}).get(key, {}).get(str(seed))
        if row is None or "error" in row:
            return row is not None
        if method not in PRETRAINED:
            return True
        epochs = self.args.pretrain_epochs
        return row.get("pretrain_method") == self.pretrain_method(dataset) and (
            epochs is None or row.get("pretrain_epochs") == epochs
        )

    def run(self) -> None:
        """Every dataset x seed x fraction x method not recorded yet, seed by seed."""
        for dataset in self.args.datasets:
            fractions = self.args.fractions or FRACTIONS.get(dataset, (0.1, 1.0))
            for seed in self.args.seeds:
                for fraction in fractions:
                    for method in self.args.methods:
                        key = fraction_key(fraction)
                        if method in SEMI and labels_arg(fraction) is None:
                            continue  # all labels: nothing unlabelled to learn from
                        if self.recorded(dataset, method, key, seed):
                            continue
                        print(f"[label-efficiency] {dataset} {method} {fraction_label(key)} seed {seed}", flush=True)
                        try:
                            row = self.measure(dataset, method, fraction, seed)
                        except (SystemExit, Exception) as exc:  # record the failure, go on with the other runs
                            text = str(exc).strip()
                            row = {"error": text.splitlines()[-1][:200] if text else type(exc).__name__}
                        self.save(dataset, ("runs", method, key, str(seed)), row)
                        print(f"[label-efficiency] {dataset} {method} {key} {seed}: {json.dumps(row)}", flush=True)


def _command(argv: list[str]) -> str:
    env = []
    for name in ("OMP_NUM_THREADS", "MEDCLASS_DATA_DIR"):
        if os.environ.get(name):
            value = os.environ[name].replace(str(ROOT.parent) + "/", "../")
            env.append(f"{name}={value}")
    return " ".join([*env, "python bench/label_efficiency.py", *argv])


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(FRACTIONS))
    ap.add_argument(
        "--fractions", nargs="+", type=float, help="label fractions for every dataset (1: all; above 1: image counts)"
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, help="pretraining epochs (default: the recipe's)")
    ap.add_argument("--pretrain-method", help="pretraining method (default: simclr for 2D, mim for 3D)")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE", help="dotted override of every train")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-label-efficiency"), help="folder of the run folders")
    ap.add_argument("--results", default=str(RESULTS), help="results file (outside bench/results: no BENCHMARKS.md)")
    ap.add_argument("--render", action="store_true", help="only write the section and figure from saved results")
    ap.add_argument("--no-render", action="store_true", help="write neither BENCHMARKS.md nor the figure")
    args = ap.parse_args(argv)
    try:
        [labels_arg(f) for f in args.fractions or ()]
    except ValueError as exc:
        ap.error(f"--fractions: {exc}")
    results = Path(args.results)
    if args.render:
        write_outputs(_load(results), results, benchmarks=renders_benchmarks(results))
        return 0
    Bench(args, _command(argv)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
