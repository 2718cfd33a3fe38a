"""A self-contained ``report.html`` for a training/evaluation run.

The page is one file with inline CSS and inline SVG charts: no scripts, fonts, images or other
external resources, so it opens offline, can be attached to an e-mail and prints cleanly. It only
presents what it is given (the ``metrics.json`` dict, ROC/PR curve points, the per-epoch history
and the resolved config); nothing is computed here beyond picking and formatting values.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from medclass import __version__
from medclass.report.svg import confusion_svg, line_chart
from medclass.utils.files import write_text

__all__ = ["fmt", "fmt_ci", "render_report", "write_report"]

DASH = "\u2013"  # shown for missing and NaN values

_SPLIT_ORDER = ("train", "val", "test")
_SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}
_CLASS_COLUMNS = (
    ("support", "Support"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("auc_roc", "AUROC"),
    ("auc_pr", "AUPRC"),
)
_POINT_COLUMNS = (
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("ppv", "PPV"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("acc", "Accuracy"),
    ("balanced_accuracy", "Bal. acc."),
)
_HISTORY_SKIP = {"epoch", "member", "step", "steps", "seconds", "time", "elapsed", "wall_s", "samples"}

_CSS = """
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.cam img { width: 112px; height: 112px; image-rendering: pixelated; }
.cam figcaption { font-size: 12px; text-align: center; }
:root { --fg: #1b1b1b; --muted: #666; --line: #dcdcdc; --soft: #f5f6f8; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
.meta, .muted { color: var(--muted); }
.meta span + span::before { content: " \\00b7  "; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: 6px; padding: 8px 12px; }
.card .k { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.card .v { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .s { font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; margin: 4px 0 12px; }
th, td { padding: 3px 9px; text-align: right; white-space: nowrap; border-bottom: 1px solid #ececec; }
th { font-weight: 600; border-bottom: 1px solid #aaa; background: var(--soft); }
th:first-child, td:first-child { text-align: left; }
tr.ours td { font-weight: 600; background: #eef6fb; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; margin: 6px 0 8px; }
.mini { display: flex; flex-wrap: wrap; gap: 6px; max-width: 760px; }
figure { margin: 0; }
svg { display: block; max-width: 100%; height: auto; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 4px; font-size: 12px; overflow-x: auto; }
details summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 36px; font-size: 12px; color: var(--muted); }
@page { margin: 12mm; }
@media print {
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  .cards, .figs, figure, table { break-inside: avoid; }
  .scroll { overflow: visible; }
  .card { border-left-color: #555; }
}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _number(v: object) -> float | None:
    """Returns ``v`` as a finite float, or None for missing, NaN, infinite and non-numeric values."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    fv = float(v)
    return fv if math.isfinite(fv) else None


def fmt(v: object, digits: int = 3) -> str:
    """Formats a metric value: integers as such, reals with ``digits`` decimals, NaN/missing as "–".

    Args:
        v: The value (any type; non-numbers give "–").
        digits: Decimals for non-integer values.

    Returns:
        The formatted string.
    """
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return f"{int(v):,}"
    x = _number(v)
    return DASH if x is None else f"{x:.{digits}f}"


def fmt_ci(v: object, ci: object, digits: int = 3) -> str:
    """Formats a value with its confidence interval, e.g. ``0.912 (0.881–0.940)``.

    Args:
        v: The point estimate.
        ci: ``[lo, hi]``; omitted from the output when missing or not finite.
        digits: Decimals.

    Returns:
        The formatted string; "–" when ``v`` is missing or NaN.
    """
    text = fmt(v, digits)
    if text == DASH or not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return text
    lo, hi = _number(ci[0]), _number(ci[1])
    if lo is None or hi is None:
        return text
    return f"{text} ({lo:.{digits}f}{DASH}{hi:.{digits}f})"


def _ci_range(ci: object, digits: int = 3) -> str:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return ""
    lo, hi = _number(ci[0]), _number(ci[1])
    return "" if lo is None or hi is None else f"{lo:.{digits}f}{DASH}{hi:.{digits}f}"


def _ordered_splits(splits: Mapping[str, Any]) -> list[str]:
    known = [s for s in _SPLIT_ORDER if s in splits]
    return known + [s for s in splits if s not in known]


def _split_title(name: str) -> str:
    return _SPLIT_NAMES.get(name, name)


def _card(key: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="s">{_e(sub)}</div>' if sub else ""
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>{sub_html}</div>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        cls_attr = f' class="{_e(cls)}"' if cls else ""
        body.append(f"<tr{cls_attr}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _header(title: str, metrics: Mapping[str, Any], generated: str) -> str:
    labels = metrics.get("label_names") or []
    items = [
        f"Dataset: {metrics.get('dataset', DASH)}",
        f"Task: {metrics.get('task', DASH)}",
        f"{len(labels)} {'labels' if metrics.get('task') == 'multilabel' else 'classes'}" if labels else "",
        f"Positive class: {metrics['positive_class']}" if metrics.get("positive_class") is not None else "",
        f"Generated {generated}",
    ]
    meta = "".join(f"<span>{_e(i)}</span>" for i in items if i)
    return f'<header><h1>{_e(title)}</h1><div class="meta">{meta}</div></header>'


def _summary(metrics: Mapping[str, Any]) -> str:
    splits = metrics.get("splits") or {}
    order = _ordered_splits(splits)
    if not order:
        return '<section><h2>Summary</h2><p class="muted">No evaluation results.</p></section>'
    name = "test" if "test" in splits else ("val" if "val" in splits else order[-1])
    s = splits.get(name) or {}
    auc_ci, acc_ci = _ci_range(s.get("auc_ci")), _ci_range(s.get("acc_ci"))
    cards = [
        _card("AUC", fmt(s.get("auc")), f"CI {auc_ci}" if auc_ci else ""),
        _card("Accuracy", fmt(s.get("acc")), f"CI {acc_ci}" if acc_ci else ""),
        _card("Balanced accuracy", fmt(s.get("balanced_accuracy"))),
    ]
    if "quadratic_kappa" in s:
        cards.append(
            _card("Quadratic \u03ba", fmt(s.get("quadratic_kappa")), f"Cohen's \u03ba {fmt(s.get('cohen_kappa'))}")
        )
    else:
        cards.append(_card("Cohen's \u03ba", fmt(s.get("cohen_kappa"))))
    op = s.get("operating_point")
    if isinstance(op, Mapping):
        sub = f"sens {fmt(op.get('sensitivity'))} \u00b7 spec {fmt(op.get('specificity'))}"
        positive = metrics.get("positive_class")
        if positive is not None:  # binary: the rates are those of this class, the threshold is on its probability
            sub += f" \u00b7 positive: {positive}"
        cards.append(_card("Operating point", f"t = {fmt(op.get('threshold'))}", sub))
    heading = f"Summary \u2014 {_split_title(name).lower()} split (n = {fmt(s.get('n'))})"
    return f'<section><h2>{_e(heading)}</h2><div class="cards">{"".join(cards)}</div></section>'


def _reference(metrics: Mapping[str, Any]) -> str:
    ref = metrics.get("reference")
    if not isinstance(ref, Sequence) or isinstance(ref, str) or not ref:
        return ""
    rows = [[str(r.get("method", DASH)), fmt(r.get("auc")), fmt(r.get("acc"))] for r in ref if isinstance(r, Mapping)]
    classes = [""] * len(rows)
    splits = metrics.get("splits") or {}
    name = "test" if "test" in splits else next(iter(_ordered_splits(splits)), None)
    if name is not None:
        ours = splits.get(name) or {}
        rows.append([f"medclass (this run, {name})", fmt(ours.get("auc")), fmt(ours.get("acc"))])
        classes.append("ours")
    note = '<p class="muted">Published MedMNIST results on the same test split, for comparison.</p>'
    return f"<section><h2>Reference results</h2>{note}{_table(['Method', 'AUC', 'ACC'], rows, classes)}</section>"


def _curve_charts(split_curves: Mapping[str, Any], per_class: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    by_name = {str(c.get("name")): c for c in per_class if isinstance(c, Mapping)}
    charts = []
    specs = (
        ("roc", "ROC", "False positive rate", "True positive rate", True, "auc_roc", "AUC"),
        ("pr", "Precision\u2013recall", "Recall", "Precision", False, "auc_pr", "AP"),
    )
    for key, name, xlabel, ylabel, diagonal, area_key, area_name in specs:
        per = split_curves.get(key)
        if not isinstance(per, Mapping) or not per:
            continue
        series = []
        for cls, pts in per.items():
            if not isinstance(pts, Mapping):
                continue
            area = _number((by_name.get(str(cls)) or {}).get(area_key))
            short = str(cls) if len(str(cls)) <= 24 else str(cls)[:23] + "\u2026"
            label = f"{short} ({area_name} {area:.3f})" if area is not None else str(cls)
            series.append((label, list(pts.get("x") or []), list(pts.get("y") or [])))
        if series:
            svg = line_chart(
                series,
                title=f"{name} \u2014 {_split_title(split).lower()}",
                xlabel=xlabel,
                ylabel=ylabel,
                xlim=(0.0, 1.0),
                ylim=(0.0, 1.0),
                diagonal=diagonal,
            )
            charts.append(f"<figure>{svg}</figure>")
    return charts


def _reliability_chart(split_curves: Mapping[str, Any], s: Mapping[str, Any], split: str) -> str:
    """Reliability diagram: observed frequency against confidence, before and after calibration."""
    rel = split_curves.get("reliability")
    cal = s.get("calibration")
    if not isinstance(rel, Mapping) or not isinstance(cal, Mapping):
        return ""
    before = cal.get("uncalibrated") if isinstance(cal.get("uncalibrated"), Mapping) else {}
    names = {
        "before": f"before (ECE {fmt(before.get('ece'))})",
        "after": f"{cal.get('method')} (ECE {fmt(cal.get('ece'))})",
    }
    series = [
        (names[k], list(pts.get("confidence") or []), list(pts.get("frequency") or []))
        for k, pts in rel.items()
        if isinstance(pts, Mapping) and k in names and (k == "before" or cal.get("method") != "none")
    ]
    if not series:
        return ""
    svg = line_chart(
        series,
        title=f"Reliability \u2014 {_split_title(split).lower()}",
        xlabel="Confidence",
        ylabel="Observed frequency",
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        diagonal=True,
    )
    return f"<figure>{svg}</figure>"


def _confusion(s: Mapping[str, Any], labels: Sequence[str], task: str, split: str) -> str:
    cm = s.get("confusion_matrix")
    if not isinstance(cm, Sequence) or not cm:
        return ""
    is_stack = all(isinstance(m, Sequence) and m and isinstance(m[0], Sequence) for m in cm)
    if task == "multilabel" or is_stack:
        minis = []
        for i, m in enumerate(cm):
            name = labels[i] if i < len(labels) else str(i)
            minis.append(confusion_svg(m, ["neg", "pos"], title=str(name), cell=36))
        return f'<figure><div class="mini">{"".join(minis)}</div></figure>'
    title = f"Confusion matrix \u2014 {_split_title(split).lower()}"
    return f"<figure>{confusion_svg(cm, labels, title=title)}</figure>"


def _class_table(per_class: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in per_class:
        if not isinstance(c, Mapping):
            continue
        row = [str(c.get("name", DASH))]
        for key, _ in _CLASS_COLUMNS:
            row.append(fmt_ci(c.get(key), c.get(f"{key}_ci")))
        rows.append(row)
    if not rows:
        return ""
    return "<h3>Per class</h3>" + _table(["Class"] + [h for _, h in _CLASS_COLUMNS], rows)


def _points_table(s: Mapping[str, Any]) -> str:
    rows = []
    fixed = s.get("threshold_0.5")
    if isinstance(fixed, Mapping):
        rows.append(["0.5 (default)"] + [fmt(fixed.get(k)) for k, _ in _POINT_COLUMNS])
    op = s.get("operating_point")
    if isinstance(op, Mapping):
        rows.append([f"{fmt(op.get('threshold'))} (operating point)"] + [fmt(op.get(k)) for k, _ in _POINT_COLUMNS])
    if not rows:
        return ""
    return "<h3>Decision thresholds</h3>" + _table(["Threshold"] + [h for _, h in _POINT_COLUMNS], rows)


def _positive_note(metrics: Mapping[str, Any]) -> str:
    """Which class the binary thresholds and rates are about (empty for other tasks)."""
    positive = metrics.get("positive_class")
    if positive is None:
        return ""
    return (
        f'<p class="muted">Positive class: {_e(positive)}. Thresholds apply to its probability; sensitivity is '
        f"its recall and specificity that of the other class.</p>"
    )


def _split_section(name: str, s: Mapping[str, Any], metrics: Mapping[str, Any], curves: Mapping[str, Any]) -> str:
    task = str(metrics.get("task", ""))
    labels = [str(x) for x in metrics.get("label_names") or []]
    per_class = [c for c in (s.get("per_class") or []) if isinstance(c, Mapping)]
    if not labels and per_class:
        labels = [str(c.get("name", i)) for i, c in enumerate(per_class)]
    facts = [
        f"n = {fmt(s.get('n'))}",
        f"AUC {fmt_ci(s.get('auc'), s.get('auc_ci'))}",
        f"ACC {fmt_ci(s.get('acc'), s.get('acc_ci'))}",
        f"balanced accuracy {fmt(s.get('balanced_accuracy'))}",
        f"Cohen's \u03ba {fmt(s.get('cohen_kappa'))}",
    ]
    if "quadratic_kappa" in s:
        facts.append(f"quadratic \u03ba {fmt(s.get('quadratic_kappa'))}")
    cal = s.get("calibration")
    if isinstance(cal, Mapping) and isinstance(cal.get("uncalibrated"), Mapping):
        how = f"temperature {fmt(cal.get('temperature'), 2)}" if "temperature" in cal else str(cal.get("method"))
        if cal.get("fitted_temperature") not in (None, cal.get("temperature")):
            how += f"; fitted {fmt(cal['fitted_temperature'], 2)}, not significant on validation"
        facts.append(f"ECE {fmt(cal['uncalibrated'].get('ece'))} \u2192 {fmt(cal.get('ece'))} ({how})")
        facts.append(f"Brier {fmt(cal['uncalibrated'].get('brier'))} \u2192 {fmt(cal.get('brier'))}")
    sets = (s.get("conformal") or {}).get("0.1")
    if isinstance(sets, Mapping):
        facts.append(
            f"90% prediction sets: coverage {fmt(sets.get('coverage'))}, mean size {fmt(sets.get('mean_size'), 2)}"
        )
    ref = s.get("referral")
    if isinstance(ref, Mapping):
        facts.append(
            f"referral: {fmt(ref.get('coverage'))} of cases accepted, sensitivity {fmt(ref.get('sensitivity'))} "
            f"on them (target {fmt(ref.get('target_sensitivity'), 2)})"
        )
    cases = s.get("cases")
    if isinstance(cases, Mapping):
        facts.append(
            f"one prediction per case ({fmt(cases.get('n_cases'))} cases, {fmt(cases.get('images_per_case'), 2)} "
            f"images each on average): AUC {fmt(cases.get('auc'))}, ACC {fmt(cases.get('acc'))}, balanced accuracy "
            f"{fmt(cases.get('balanced_accuracy'))}"
        )
    meta = "".join(f"<span>{_e(f)}</span>" for f in facts)
    split_curves = curves.get(name) if isinstance(curves, Mapping) else None
    figs = _curve_charts(split_curves, per_class, name) if isinstance(split_curves, Mapping) else []
    cm = _confusion(s, labels, task, name)
    if cm:
        figs.append(cm)
    rel = _reliability_chart(split_curves, s, name) if isinstance(split_curves, Mapping) else ""
    if rel:
        figs.append(rel)
    rc = split_curves.get("risk_coverage") if isinstance(split_curves, Mapping) else None
    if isinstance(rc, Mapping) and rc.get("coverage"):
        svg = line_chart(
            [(f"AURC {fmt(s.get('aurc'))}", list(rc["coverage"]), list(rc["risk"]))],
            title=f"Risk\u2013coverage \u2014 {_split_title(name).lower()}",
            xlabel="Share of cases accepted (surest first)",
            ylabel="Error rate among accepted",
            xlim=(0.0, 1.0),
        )
        figs.append(f"<figure>{svg}</figure>")
    figs_html = f'<div class="figs">{"".join(figs)}</div>' if figs else ""
    gallery = _gallery(split_curves.get("gallery") if isinstance(split_curves, Mapping) else None)
    points = _points_table(s)
    if points:
        points += _positive_note(metrics)
    return (
        f"<section><h2>{_e(_split_title(name))} split</h2>"
        f'<div class="meta">{meta}</div>{figs_html}{points}{_class_table(per_class)}{gallery}</section>'
    )


def _gallery(cells: object) -> str:
    """Grad-CAM overlays of the most confident cases of each outcome (PNG images embedded as data URIs)."""
    if not isinstance(cells, Mapping) or not any(cells.values()):
        return ""
    rows = []
    for cell, items in cells.items():
        imgs = "".join(
            f'<figure class="cam"><img alt="{_e(cell)}" src="data:image/png;base64,{_e(it["png"])}">'
            f"<figcaption>{_e(it['label'])}, p {fmt(it['prob'], 2)}</figcaption></figure>"
            for it in items
            if isinstance(it, Mapping) and "png" in it
        )
        rows.append(f'<h4>{_e(cell.capitalize())}</h4><div class="gallery">{imgs or "<p>none</p>"}</div>')
    return "<h3>Grad-CAM gallery</h3>" + "".join(rows)


def _fields_section(importance: object) -> str:
    """Permutation importance of each clinical field on the test split (``metrics["field_importance"]``)."""
    if not isinstance(importance, Mapping) or not isinstance(importance.get("_all"), Mapping):
        return ""
    rows = [
        [str(name), fmt((v or {}).get("auc_drop")), fmt((v or {}).get("sd"))]
        for name, v in importance.items()
        if name != "_all" and isinstance(v, Mapping)
    ]
    return (
        f"<section><h2>Clinical fields</h2><p>Drop in test AUC ({fmt(importance['_all'].get('auc'))} with every "
        "field) when one field's values are shuffled across the test rows: what the model takes from each field."
        "</p>" + _table(["Field", "AUC drop", "sd over shuffles"], rows) + "</section>"
    )


def _robustness_section(rob: object) -> str:
    """Test AUC under each corruption at severities 1-5, beside the clean AUC."""
    if not isinstance(rob, Mapping) or not isinstance(rob.get("corruptions"), Mapping):
        return ""
    clean = (rob.get("clean") or {}).get("auc")
    rows = [
        [str(name), *[fmt((m or {}).get("auc")) for m in sev]]
        for name, sev in rob["corruptions"].items()
        if isinstance(sev, Sequence)
    ]
    mean = (rob.get("mean") or {}).get("auc")
    return (
        f"<section><h2>Robustness</h2><p>Test AUC under corruptions (clean: {fmt(clean)}; mean over all "
        f"corruptions and severities: {fmt(mean)}).</p>"
        + _table(["Corruption", "1", "2", "3", "4", "5"], rows)
        + "</section>"
    )


def _history_section(history: Sequence[Mapping[str, Any]]) -> str:
    epochs = [h for h in history if isinstance(h, Mapping)]
    if not epochs:
        return ""
    keys: list[str] = []
    for h in epochs:
        for k, v in h.items():
            if k not in keys and _number(v) is not None and not isinstance(v, bool):
                keys.append(str(k))
    xs = [
        _number(h.get("epoch")) if _number(h.get("epoch")) is not None else float(i + 1) for i, h in enumerate(epochs)
    ]

    def series_for(group: list[str]) -> list[tuple[str, list[float], list[float]]]:
        return [
            (k, xs, [_number(h.get(k)) if _number(h.get(k)) is not None else math.nan for h in epochs]) for k in group
        ]

    def is_lr(k: str) -> bool:
        return k.lower() in ("lr", "learning_rate") or k.lower().startswith("lr_")

    loss = [k for k in keys if "loss" in k.lower()]
    lr = [k for k in keys if is_lr(k)]
    skip = set(loss) | set(lr) | _HISTORY_SKIP
    other = [k for k in keys if k not in skip and not k.lower().endswith(("_seconds", "_time", "_s"))]
    charts = []
    for group, title, ylabel in (
        (loss, "Loss", "loss"),
        (other, "Metrics", "value"),
        (lr, "Learning rate", "lr"),
    ):
        if group:
            svg = line_chart(series_for(group), title=title, xlabel="epoch", ylabel=ylabel)
            charts.append(f"<figure>{svg}</figure>")
    facts = [f"{len(epochs)} epochs"]
    secs = [_number(h.get("seconds")) for h in epochs]
    if any(v is not None for v in secs):
        total = sum(v for v in secs if v is not None)
        facts.append(f"training time {total / 60:.1f} min" if total >= 120 else f"training time {total:.1f} s")
    best_key = next((k for k in other if "auc" in k.lower()), None) or next(iter(other), None)
    if best_key is not None:
        vals = [(_number(h.get(best_key)), x) for h, x in zip(epochs, xs)]
        vals = [(v, x) for v, x in vals if v is not None]
        if vals:
            v, x = max(vals, key=lambda t: t[0])
            facts.append(f"best {best_key} {v:.3f} at epoch {x:g}")
    meta = "".join(f"<span>{_e(f)}</span>" for f in facts)
    figs = f'<div class="figs">{"".join(charts)}</div>' if charts else ""
    return f'<section><h2>Training</h2><div class="meta">{meta}</div>{figs}</section>'


def _config_section(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, indent=2, ensure_ascii=False, default=str)
    return (
        "<section><h2>Configuration</h2><details><summary>Resolved run configuration</summary>"
        f"<pre>{_e(text)}</pre></details></section>"
    )


def render_report(
    *,
    title: str,
    metrics: dict,
    curves: dict | None = None,
    history: list[dict] | None = None,
    config: dict | None = None,
    generated: str | None = None,
) -> str:
    """Renders a run's results as one self-contained HTML page.

    Args:
        title: Page title.
        metrics: The ``metrics.json`` dict (``dataset``, ``task``, ``label_names``, ``splits`` and
            optionally ``reference``); missing keys and NaN values are shown as "–".
        curves: ``{split: {"roc" | "pr": {class_name: {"x": [...], "y": [...]}}}}``.
        history: Per-epoch dicts; every numeric key is plotted (losses, metrics and learning rate
            on separate charts).
        config: The resolved run configuration, shown collapsed.
        generated: Generation time to print; the current local time when omitted.

    Returns:
        The HTML document as a string.
    """
    metrics = metrics if isinstance(metrics, Mapping) else {}
    if generated is None:
        generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    splits = metrics.get("splits") or {}
    parts = [_header(title, metrics, generated), _summary(metrics), _reference(metrics)]
    for name in _ordered_splits(splits):
        s = splits.get(name)
        if isinstance(s, Mapping):
            parts.append(_split_section(name, s, metrics, curves or {}))
    parts.append(_fields_section(metrics.get("field_importance")))
    parts.append(_robustness_section(metrics.get("robustness")))
    if history:
        parts.append(_history_section(history))
    if config:
        parts.append(_config_section(config))
    parts.append(f"<footer>Generated by medclass {_e(__version__)}.</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(p for p in parts if p)
        + "\n</main>\n</body>\n</html>\n"
    )


def write_report(path: str | Path, **kwargs: Any) -> Path:
    """Renders a report and writes it atomically (:func:`medclass.utils.files.write_text`).

    Args:
        path: Destination file; its folder is created when missing.
        **kwargs: Keyword arguments of :func:`render_report`.

    Returns:
        The path written.
    """
    return write_text(path, render_report(**kwargs))  # mode 0o666 less the umask: a report is meant to be shared
