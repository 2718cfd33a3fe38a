"""Tables, targets and the figure of the label-efficiency bench, from its results file.

``bench/label_efficiency.py`` measures and saves; this module reads the saved results and writes the
``label-efficiency`` section of ``BENCHMARKS.md`` and its figure (or, for a results file outside
``bench/results/``, both beside that file).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchmd import update_section  # noqa: E402
from runs import mean_sd  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
FIGURE_LINK = "bench/results/label-efficiency.png"
SECTION = ("label-efficiency", "Learning from few labels: label-efficiency curves")
METHODS = ("supervised", "probe", "finetune", "semi", "pretrain+semi")
#: dataset -> default label fractions (1 = all labels)
FRACTIONS: dict[str, tuple[float, ...]] = {
    "pneumoniamnist": (0.01, 0.1, 1.0),
    "breastmnist": (0.1, 0.25, 1.0),
    "adrenalmnist3d": (0.1, 1.0),
}
TITLES = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST", "adrenalmnist3d": "AdrenalMNIST3D"}
#: MedMNIST+ (Doerrich et al. 2024): frozen DINO ViT-B/16, linear probe on all labels: (test AUC, test ACC)
DINO_PROBE = {"pneumoniamnist": (0.973, 0.866), "breastmnist": (0.868, 0.833)}
#: the issue's pretraining budget for the probe targets: CPU-minutes on this machine, every seed
PRETRAIN_BUDGET = 30


# ------------------------------------------------------------------------------------------ helpers


def fraction_label(key: str) -> str:
    """How a fraction key reads in a table: ``1%``, ``25%``, ``all``, ``50 images``."""
    value = float(key)
    if value == 1:
        return "all"
    return f"{value * 100:g}%" if value < 1 else f"{int(value)} images"


def is_3d(dataset: str) -> bool:
    """Whether a catalog dataset holds volumes (its name ends in ``3d``, as in the catalog)."""
    return dataset.lower().endswith("3d")


def renders_benchmarks(results: Path) -> bool:
    """Whether a results file is one of the benchmark's own (inside ``bench/results/``), so BENCHMARKS.md follows it."""
    return results.resolve().parent == RESULTS_DIR.resolve()


def _ok(runs: dict[str, dict]) -> list[dict]:
    return [r for r in runs.values() if "error" not in r]


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
        "pretrain_minutes_max": max((r["pretrain_minutes"] for r in rows if r.get("pretrain_minutes")), default=None),
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
        goal = (
            f"{TITLES[dataset]}, linear probe with all labels, encoder from <= {PRETRAIN_BUDGET} CPU-min of "
            f"pretraining: test AUC > {bar:.3f} (MedMNIST+ DINO ViT-B/16)"
        )
        text = None
        if cell:
            most = cell["pretrain_minutes_max"]
            spent = f", pretraining at most {most:.1f} CPU-min" if most is not None else ", pretraining not timed"
            within = most is not None and most <= PRETRAIN_BUDGET
            text = f"AUC {cell['test_auc']:.4f} ({_seeds(cell)}){spent}", cell["test_auc"] > bar and within
        lines.append(_target(goal, text))

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


def pretraining_epochs(entry: dict) -> str:
    """The pretraining epochs behind a dataset's rows: ``30``, or ``20 (probe), 30 (finetune, pretrain+semi)`` when
    methods were measured on encoders pretrained for different lengths (each row records its own)."""
    by_epochs: dict[int, set[str]] = {}
    for method, cells in entry.get("runs", {}).items():
        for row in (r for cell in cells.values() for r in _ok(cell)):
            if row.get("pretrain_epochs") is not None:
                by_epochs.setdefault(int(row["pretrain_epochs"]), set()).add(method)
    if not by_epochs:  # rows from before they recorded it: the pretraining runs say
        records = entry.get("pretrain", {}).values()
        return ", ".join(map(str, sorted({p["epochs"] for p in records if "error" not in p and p.get("epochs")})))
    if len(by_epochs) == 1:
        return str(next(iter(by_epochs)))
    order = {m: i for i, m in enumerate(METHODS)}
    return ", ".join(
        f"{e} ({', '.join(sorted(ms, key=lambda m: order.get(m, len(order))))})" for e, ms in sorted(by_epochs.items())
    )


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
        "`probe` (a linear probe of a frozen self-supervised encoder, fitted on the subset; the features, its final "
        "embedding alone or with every stage's pooled output before it, and the L2 strength are chosen on "
        "validation), `finetune` "
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
        epochs = pretraining_epochs(entry)
        where = (
            f"{mach.get('cpu', '?')}, {mach.get('platform', '?')}, {mach.get('cores', '?')} cores, "
            f"{mach.get('threads', '?')} thread(s) per run"
        )
        lines += [f"### {TITLES.get(dataset, dataset)}", "", f"Command: `{entry.get('command', '?')}` ({where})."]
        if pre:
            lines[-1] += f" Pretraining: {', '.join(sorted(pre))}, epochs {epochs}."
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
