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

``BENCHMARKS.md`` (section ``label-efficiency``) and the figure are rewritten only when the results file is
inside ``bench/results/`` and ``--no-render`` is not given; a results file elsewhere (a smoke run) gets the
figure and the section beside it (``FILE.png``, ``FILE.md``) and leaves ``BENCHMARKS.md`` alone. A failed run is
recorded with its error and skipped like the others (delete its entry to retry). Which method is "best" at a
fraction is decided by mean validation AUC; its test figures are then reported.

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
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchmd import update_section  # noqa: E402
from machine import cpu_description  # noqa: E402
from runs import mean_sd  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
RESULTS = RESULTS_DIR / "label-efficiency.json"
FIGURE_LINK = "bench/results/label-efficiency.png"
SECTION = ("label-efficiency", "Learning from few labels: label-efficiency curves")
METHODS = ("supervised", "probe", "finetune", "semi", "pretrain+semi")
PRETRAINED = {"probe", "finetune", "pretrain+semi"}  # methods that need the pretraining run
SEMI = {"semi", "pretrain+semi"}
#: dataset -> default label fractions (1 = all labels)
FRACTIONS: dict[str, tuple[float, ...]] = {
    "pneumoniamnist": (0.01, 0.1, 1.0),
    "breastmnist": (0.1, 0.25, 1.0),
    "adrenalmnist3d": (0.1, 1.0),
}
TITLES = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST", "adrenalmnist3d": "AdrenalMNIST3D"}
#: MedMNIST+ (Doerrich et al. 2024): frozen DINO ViT-B/16, linear probe on all labels: (test AUC, test ACC)
DINO_PROBE = {"pneumoniamnist": (0.973, 0.866), "breastmnist": (0.868, 0.833)}


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


def fraction_label(key: str) -> str:
    """How a fraction key reads in a table: ``1%``, ``25%``, ``all``, ``50 images``."""
    value = float(key)
    if value == 1:
        return "all"
    return f"{value * 100:g}%" if value < 1 else f"{int(value)} images"


def is_3d(dataset: str) -> bool:
    """Whether a catalog dataset holds volumes (its name ends in ``3d``, as in the catalog)."""
    return dataset.lower().endswith("3d")


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


def renders_benchmarks(results: Path) -> bool:
    """Whether a results file is one of the benchmark's own (inside ``bench/results/``), so BENCHMARKS.md follows it."""
    return results.resolve().parent == RESULTS_DIR.resolve()


def _rel(path: Path) -> str:
    """A run folder as recorded: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _ok(runs: dict[str, dict]) -> list[dict]:
    return [r for r in runs.values() if "error" not in r]


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(path: Path, saved: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")


def _ordered(saved: dict) -> list[str]:
    order = {d: i for i, d in enumerate(FRACTIONS)}
    return sorted(saved, key=lambda d: (order.get(d, len(order)), d))


# ------------------------------------------------------------------------------------------ selection


def summary(runs: dict[str, dict]) -> dict[str, Any] | None:
    """Mean test AUC/ACC, validation AUC, label count and minutes over a cell's successful seeds (``None``: none)."""
    rows = _ok(runs)
    if not rows:
        return None

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.mean(values) if values else None

    return {
        "seeds": len(rows),
        "test_auc": mean("test_auc"),
        "test_acc": mean("test_acc"),
        "val_auc": mean("val_auc"),
        "labels": mean("labels"),
        "train_minutes": mean("train_minutes"),
        "pretrain_minutes": mean("pretrain_minutes"),
    }


def best_method(entry: dict | None, key: str) -> tuple[str, dict] | None:
    """The method with the highest mean *validation* AUC at fraction ``key``, and its summary (``None``: no runs).

    Methods run on different seeds are compared on the seeds they all share (a one-seed validation
    figure against a three-seed mean favours whichever seed happened to be easy); with no seed in
    common, on all of each method's seeds. The summary returned covers all of the winner's seeds.
    """
    if not entry:
        return None
    cells = {}
    for method, fractions in entry.get("runs", {}).items():
        runs = {
            seed: r for seed, r in fractions.get(key, {}).items() if "error" not in r and r.get("val_auc") is not None
        }
        if runs:
            cells[method] = runs
    if not cells:
        return None
    shared = set.intersection(*(set(runs) for runs in cells.values()))

    def val_auc(method: str) -> float:
        runs = cells[method]
        return statistics.mean(r["val_auc"] for seed, r in runs.items() if not shared or seed in shared)

    method = max(cells, key=val_auc)
    return method, summary(entry["runs"][method][key])


def _cell(entry: dict | None, method: str, key: str) -> dict | None:
    return summary(entry.get("runs", {}).get(method, {}).get(key, {})) if entry else None


def _seeds(cell: dict) -> str:
    return f"{cell['seeds']} seed{'s' if cell['seeds'] != 1 else ''}"


def _target(goal: str, measured: tuple[str, bool] | None) -> str:
    """A target line: the goal, then the measured figure and met / not met, or ``not measured``."""
    if measured is None:
        return f"- {goal}: not measured"
    return f"- {goal}: {measured[0]}: {'**met**' if measured[1] else '**not met**'}"


def _vs_supervised(entry: dict | None, key: str, method: str | None, margin: float) -> tuple[str, bool] | None:
    """``method`` (``None``: the best by validation) against ``supervised`` at ``key``: figure and gain >= margin."""
    sup = _cell(entry, "supervised", key)
    if method is None:
        others = [m for m in (entry or {}).get("runs", {}) if m != "supervised" and _cell(entry, m, key)]
        best = best_method(entry, key) if others else None
        method, cell = best if best else (None, None)
    else:
        cell = _cell(entry, method, key)
    if cell is None or sup is None:
        return None
    gain = cell["test_auc"] - sup["test_auc"]
    text = f"`{method}` AUC {cell['test_auc']:.3f} vs supervised {sup['test_auc']:.3f} ({gain:+.3f})"
    return text, gain >= margin


def targets(saved: dict) -> list[str]:
    """The issue's targets, each with its measured figure and ``met`` / ``not met`` / ``not measured``."""
    pneu = saved.get("pneumoniamnist")
    best = best_method(pneu, "0.1")
    measured = None
    if best:
        m, s = best
        text = f"`{m}` AUC {s['test_auc']:.3f}, ACC {s['test_acc']:.3f} ({_seeds(s)})"
        measured = text, s["test_auc"] >= 0.962 and s["test_acc"] >= 0.884
    lines = [_target("PneumoniaMNIST, 10% of labels: best method test AUC >= 0.962 and ACC >= 0.884", measured)]
    best = best_method(pneu, "0.01")
    measured = best and (
        f"`{best[0]}` AUC {best[1]['test_auc']:.3f} ({_seeds(best[1])})",
        best[1]["test_auc"] >= 0.944,
    )
    lines.append(_target("PneumoniaMNIST, 1% of labels: best method test AUC >= 0.944", measured or None))

    two_d = [d for d in FRACTIONS if not is_3d(d)] + [d for d in _ordered(saved) if d not in FRACTIONS and not is_3d(d)]
    for dataset in two_d:
        entry = saved.get(dataset)
        keys = {k for fr in (entry or {}).get("runs", {}).values() for k, v in fr.items() if _ok(v) and float(k) != 1}
        key = min(keys, key=lambda k: (float(k) > 1, float(k))) if keys else None
        goal = f"{TITLES.get(dataset, dataset)}, smallest fraction: best method beats supervised by >= 0.03 test AUC"
        goal += f" ({fraction_label(key)})" if key else ""
        lines.append(_target(goal, _vs_supervised(entry, key, None, 0.03) if key else None))

    for dataset, bar in (("pneumoniamnist", 0.973), ("breastmnist", 0.868)):
        cell = _cell(saved.get(dataset), "probe", "1")
        goal = f"{TITLES[dataset]}, linear probe with all labels: test AUC > {bar:.3f} (MedMNIST+ DINO ViT-B/16)"
        text = cell and (f"AUC {cell['test_auc']:.3f} ({_seeds(cell)})", cell["test_auc"] > bar)
        lines.append(_target(goal, text or None))

    goal = "AdrenalMNIST3D, 10% of labels: pretrain (finetune) test AUC >= supervised + 0.02"
    lines.append(_target(goal, _vs_supervised(saved.get("adrenalmnist3d"), "0.1", "finetune", 0.02)))
    return lines


# ------------------------------------------------------------------------------------------ rendering


def _labels_cell(key: str, rows: list[dict]) -> str:
    counts = sorted({int(r["labels"]) for r in rows if r.get("labels") is not None})
    if not counts:
        return fraction_label(key)
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{fraction_label(key)} ({n})"


def _minutes(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.1f}" if mean >= 1 else f"{mean:.2f}"


def _reference_lines(dataset: str) -> list[str]:
    from medclass.evaluate import reference_rows

    blank = " |" * 4  # val AUC, seeds, pretrain and train minutes
    lines = [
        f"| {r['method']} (MedMNIST v2) | all | {r['auc']:.3f} | {r['acc']:.3f} |{blank}"
        for r in reference_rows(dataset)
        if r["method"].startswith("ResNet")
    ]
    if dataset in DINO_PROBE:
        auc, acc = DINO_PROBE[dataset]
        lines.append(f"| DINO ViT-B/16 linear probe (MedMNIST+) | all | {auc:.3f} | {acc:.3f} |{blank}")
    return lines


def table(dataset: str, entry: dict) -> list[str]:
    """One dataset's table: rows fraction x method (best by validation marked), then the reference rows."""
    runs = entry.get("runs", {})
    keys = sorted({k for fr in runs.values() for k in fr}, key=lambda k: (float(k) == 1, float(k) > 1, float(k)))
    lines = [
        "| method | labels (used) | test AUC | test ACC | val AUC | seeds | pretrain CPU-min | train CPU-min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    rank = {m: i for i, m in enumerate(METHODS)}
    for key in keys:
        best = best_method(entry, key)
        if sum(bool(_ok(runs[m].get(key, {}))) for m in runs) < 2:
            best = None  # nothing to choose between
        for method in sorted(runs, key=lambda m: (rank.get(m, len(rank)), m)):
            cell = runs[method].get(key, {})
            failed += [
                f"{method} {fraction_label(key)} seed {s}: {r['error']}" for s, r in cell.items() if "error" in r
            ]
            rows = _ok(cell)
            if not rows:
                continue
            name = f"**{method}**" if best and best[0] == method else method
            vals = [r["val_auc"] for r in rows if r.get("val_auc") is not None]
            cells = [
                name,
                _labels_cell(key, rows),
                mean_sd([r["test_auc"] for r in rows]),
                mean_sd([r["test_acc"] for r in rows]),
                mean_sd(vals),
                str(len(rows)),
                _minutes(rows, "pretrain_minutes"),
                _minutes(rows, "train_minutes"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += _reference_lines(dataset)
    if failed:
        lines += [""] + [f"- failed: {f}" for f in failed]
    return lines


def render(saved: dict) -> str:
    """The ``label-efficiency`` section of ``BENCHMARKS.md`` from saved results.

    Args:
        saved: ``{dataset: {"command", "machine": {...}, "pretrain": {seed: {...}}, "runs":
            {method: {fraction_key: {seed: row}}}}}``; a row holds ``test_auc``, ``test_acc``, ``val_auc``,
            ``labels``, ``train_minutes``, ``pretrain_minutes`` (or ``error``).

    Returns:
        Markdown: how it was measured, one table per dataset, the figure and the targets.
    """
    lines = [
        "How many labels each way of training needs: `supervised` (the default command on the labelled subset), "
        "`probe` (a linear probe of a frozen self-supervised encoder, fitted on the subset), `finetune` "
        "(the default command started from that encoder), `semi` (FixMatch, the other training images "
        "unlabelled) and `pretrain+semi` (both). One pretraining run per dataset and seed is shared by every "
        "fraction; the labelled subset is stratified and drawn with the run's seed. Test split, mean ± sd over "
        "seeds; **recipe choices and the best method per fraction (bold) are made on validation only** (methods "
        "with different seeds compared on the seeds they share), the test figures are reported, never used to "
        "choose. CPU minutes: training epochs (`history.csv`) or, "
        "for the probe, fitting it; pretraining minutes are those of the shared pretraining run. Reference rows "
        "use all labels: MedMNIST v2's ResNets and MedMNIST+'s frozen DINO ViT-B/16 linear probe (Doerrich et al. "
        "2024).",
        "",
        f"![label-efficiency curves]({FIGURE_LINK})",
        "",
    ]
    for dataset in _ordered(saved):
        entry = saved[dataset]
        mach = entry.get("machine", {})
        pre = {p.get("method") for p in entry.get("pretrain", {}).values() if "error" not in p} - {None}
        epochs = {p.get("epochs") for p in entry.get("pretrain", {}).values() if "error" not in p} - {None}
        where = (
            f"{mach.get('cpu', '?')}, {mach.get('platform', '?')}, {mach.get('cores', '?')} cores, "
            f"{mach.get('threads', '?')} thread(s) per run"
        )
        lines += [f"### {TITLES.get(dataset, dataset)}", "", f"Command: `{entry.get('command', '?')}` ({where})."]
        if pre:
            lines[-1] += f" Pretraining: {', '.join(sorted(pre))}, epochs {', '.join(map(str, sorted(epochs)))}."
        lines += ["", *table(dataset, entry), ""]
    lines += [
        "Targets (best method chosen by mean validation AUC on shared seeds, its mean test figures shown):",
        "",
        *targets(saved),
    ]
    return "\n".join(lines)


def plot(saved: dict, path: Path) -> None:
    """Label-efficiency curves: one panel per dataset, test AUC (mean ± sd) against labels used on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    datasets = _ordered(saved)
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        ticks: set[int] = set()
        for method in METHODS:
            points = []
            for cell in saved[dataset].get("runs", {}).get(method, {}).values():
                rows = [r for r in _ok(cell) if r.get("labels")]
                if rows:
                    aucs = [r["test_auc"] for r in rows]
                    sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
                    points.append((statistics.mean(r["labels"] for r in rows), statistics.mean(aucs), sd))
            if points:
                points.sort()
                x, y, err = zip(*points)
                ticks.update(round(v) for v in x)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.set_title(TITLES.get(dataset, dataset))
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(saved: dict, results: Path, *, benchmarks: bool) -> None:
    """The figure (``bench/results/label-efficiency.png``, or beside a foreign results file) and the section."""
    if benchmarks:
        plot(saved, ROOT / FIGURE_LINK)
        update_section(*SECTION, render(saved))
    else:  # a smoke run: the section beside the results file, BENCHMARKS.md untouched
        plot(saved, results.with_suffix(".png"))
        results.with_suffix(".md").write_text(render(saved) + "\n")


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
