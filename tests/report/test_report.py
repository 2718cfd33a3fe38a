"""Tests for the self-contained HTML report and its SVG charts."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medclass.report import render_report, write_report
from medclass.report.html import fmt, fmt_ci
from medclass.report.svg import PALETTE, confusion_svg, line_chart, nice_ticks, plot_area

NAN = float("nan")
TRICKY = "<debris> & mucus"
TRICKY_ESCAPED = "&lt;debris&gt; &amp; mucus"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TagChecker(HTMLParser):
    """Records unbalanced tags, tag counts and every attribute seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.extend(attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def check_html(text: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    return checker


def roc_points(power: float, n: int = 50) -> dict[str, list[float]]:
    xs = [i / (n - 1) for i in range(n)]
    return {"x": xs, "y": [x**power for x in xs]}


def pr_points(power: float, n: int = 50) -> dict[str, list[float]]:
    xs = [i / (n - 1) for i in range(n)]
    return {"x": xs, "y": [1 - 0.6 * x**power for x in xs]}


def class_row(name: str, support: int, auc: float) -> dict:
    return {
        "name": name,
        "support": support,
        "sensitivity": 0.85,
        "specificity": 0.9,
        "ppv": 0.8,
        "npv": NAN,
        "f1": 0.82,
        "auc_roc": auc,
        "auc_pr": 0.77,
        "sensitivity_ci": [0.8, 0.9],
        "specificity_ci": [0.86, 0.93],
        "f1_ci": [NAN, NAN],
        "auc_roc_ci": [auc - 0.03, auc + 0.02],
    }


def split(names: list[str], auc: float, task: str) -> dict:
    k = len(names)
    if task == "multilabel":
        cm: list = [[[50, 5], [7, 38]] for _ in names]
    else:
        cm = [[(40 if i == j else 3 + i + j) for j in range(k)] for i in range(k)]
    s = {
        "auc": auc,
        "acc": 0.861,
        "n": 624,
        "balanced_accuracy": 0.843,
        "cohen_kappa": 0.71,
        "auc_ci": [0.881, 0.94],
        "acc_ci": [0.83, 0.89],
        "confusion_matrix": cm,
        "per_class": [class_row(n, 100 + 10 * i, auc - 0.01 * i) for i, n in enumerate(names)],
    }
    if task == "binary":
        s["threshold_0.5"] = {"sensitivity": 0.97, "specificity": 0.6, "ppv": 0.8, "npv": 0.93, "f1": 0.87, "acc": 0.83}
        s["operating_point"] = {
            "threshold": 0.731,
            "sensitivity": 0.92,
            "specificity": 0.81,
            "ppv": 0.89,
            "npv": 0.86,
            "f1": 0.9,
            "acc": 0.88,
            "balanced_accuracy": 0.865,
        }
    return s


def make_inputs(task: str) -> dict:
    names = {
        "binary": ["normal", TRICKY],
        "multiclass": ["adipose", TRICKY, "lymphocytes"],
        "multilabel": ["effusion", TRICKY],
    }[task]
    metrics = {
        "dataset": "testmnist",
        "task": task,
        "label_names": names,
        "splits": {"val": split(names, 0.93, task), "test": split(names, 0.9123, task)},
        "reference": [{"method": "ResNet-18 (28)", "auc": 0.944, "acc": 0.854}, {"method": "AutoML", "auc": NAN}],
    }
    curve_names = names[1:] if task == "binary" else names
    curves = {
        sp: {
            "roc": {n: roc_points(0.2 + 0.1 * i) for i, n in enumerate(curve_names)},
            "pr": {n: pr_points(2 + i) for i, n in enumerate(curve_names)},
        }
        for sp in ("val", "test")
    }
    history = [
        {"epoch": e, "train_loss": 0.7 / e, "val_loss": 0.6 / e + 0.05, "val_auc": 0.8 + 0.02 * e, "lr": 1e-3 / e}
        for e in range(1, 9)
    ]
    history[3]["val_auc"] = NAN
    config = {"data": {"name": "testmnist", "size": 28}, "train": {"epochs": 8, "lr": 0.001}, "note": "<b>&"}
    return {"metrics": metrics, "curves": curves, "history": history, "config": config}


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_report_renders_valid_self_contained_html(task: str) -> None:
    inputs = make_inputs(task)
    page = render_report(title="Run <1> & co", generated="2024-01-02 03:04", **inputs)
    checker = check_html(page)

    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "<script" not in page
    for name, value in checker.attrs:
        if name in ("src", "href", "xlink:href"):
            raise AssertionError(f"external reference {name}={value!r}")
    assert "Run &lt;1&gt; &amp; co" in page

    assert "0.912" in page
    assert "0.912 (0.881\u20130.940)" in page  # test AUC with its CI in the split summary
    assert TRICKY_ESCAPED in page
    assert TRICKY not in page
    assert "&lt;b&gt;&amp;" in page  # config is escaped too

    # NaN values are shown as a dash (per-class NPV), also when only the CI is NaN (F1 shows 0.820 alone).
    assert "<td>\u2013</td>" in page
    assert "<td>0.820</td>" in page
    assert "<td>0.850 (0.800\u20130.900)</td>" in page

    # Per split: ROC + PR + confusion (multilabel: one per label); then loss, metrics and lr charts.
    n_conf = 2 if task == "multilabel" else 1
    charts = page.count('<svg class="chart"')
    confusions = page.count('<svg class="confusion"')
    assert charts == 2 * 2 + 3
    assert confusions == 2 * n_conf
    assert checker.tags["svg"] == 2 * charts + confusions  # each line chart nests a clipping <svg>
    assert page.count("<section>") >= 6
    assert "Reference results" in page and "ResNet-18 (28)" in page
    if task == "binary":
        assert "Decision thresholds" in page and "0.731 (operating point)" in page
        assert "t = 0.731" in page
    else:
        assert "Decision thresholds" not in page


def test_report_is_robust_to_missing_keys() -> None:
    minimal = {"dataset": "x", "task": "binary", "splits": {"test": {"auc": NAN, "per_class": [{"name": "a"}]}}}
    page = render_report(title="t", metrics=minimal)
    check_html(page)
    assert "<svg" not in page
    assert "Generated" in page
    page = render_report(title="empty", metrics={}, curves={}, history=[], config={})
    check_html(page)
    assert "No evaluation results" in page


def test_history_uses_index_when_epoch_missing() -> None:
    history = [
        {"train_loss": 1.0, "val_acc": 0.5, "seconds": 150.0},
        {"train_loss": 0.5, "val_acc": 0.7, "seconds": 90.0},
    ]
    page = render_report(title="t", metrics={}, history=history)
    check_html(page)
    assert page.count('<svg class="chart"') == 2
    assert "training time 4.0 min" in page
    assert "best val_acc 0.700 at epoch 2" in page


def test_write_report_is_atomic(tmp_path: Path) -> None:
    inputs = make_inputs("multiclass")
    out = write_report(tmp_path / "run" / "report.html", title="r", generated="today", **inputs)
    assert out == tmp_path / "run" / "report.html"
    assert sorted(os.listdir(out.parent)) == ["report.html"]
    assert out.read_text(encoding="utf-8") == render_report(title="r", generated="today", **inputs)

    write_report(out, title="second", generated="today", **inputs)  # replaces in place
    assert "<title>second</title>" in out.read_text(encoding="utf-8")
    assert sorted(os.listdir(out.parent)) == ["report.html"]


def test_write_report_failure_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(out, title="new", metrics={})
    assert out.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["report.html"]


def polylines(svg: str, colour: str) -> list[list[tuple[float, float]]]:
    found = re.findall(r'<polyline points="([^"]+)"[^>]*stroke="' + re.escape(colour) + '"', svg)
    return [[tuple(float(v) for v in p.split(",")) for p in pts.split()] for pts in found]


def test_line_chart_maps_unit_axes_to_plot_corners() -> None:
    svg = line_chart(
        [("a", [0.0, 0.5, 1.0], [0.0, 0.25, 1.0])],
        title="t",
        xlabel="x",
        ylabel="y",
        xlim=(0, 1),
        ylim=(0, 1),
        width=360,
        height=300,
    )
    check_html(svg)
    left, top, right, bottom = plot_area(360, 300)
    assert (left, top, right, bottom) == (52.0, 26.0, 346.0, 260.0)
    (line,) = polylines(svg, PALETTE[0])
    assert line[0] == pytest.approx((left, bottom))
    assert line[1] == pytest.approx((left + 0.5 * (right - left), bottom - 0.25 * (bottom - top)), abs=0.01)
    assert line[-1] == pytest.approx((right, top))
    assert 'width="360"' in svg and "viewBox=" in svg


def test_line_chart_diagonal_ticks_and_labels() -> None:
    svg = line_chart(
        [("roc", [0, 1], [0, 1])], title="ROC", xlabel="FPR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1), diagonal=True
    )
    left, top, right, bottom = plot_area(360, 300)
    m = re.search(r'class="diagonal" x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="([\d.]+)"', svg)
    assert m is not None
    assert [float(v) for v in m.groups()] == pytest.approx([left, bottom, right, top])
    for tick in ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0"):
        assert f">{tick}</text>" in svg
    assert ">FPR</text>" in svg and ">TPR</text>" in svg


def test_line_chart_breaks_lines_at_nan_and_escapes_text() -> None:
    svg = line_chart(
        [("a<b", [1, 2, 3, 4, 5], [1.0, 2.0, NAN, 4.0, 5.0]), ("c&d", [1, 2], [3.0, 3.0])],
        title="T <x>",
        xlabel="e&",
        ylabel="v",
    )
    check_html(svg)
    assert len(polylines(svg, PALETTE[0])) == 2
    assert len(polylines(svg, PALETTE[1])) == 1
    assert "a&lt;b" in svg and "c&amp;d" in svg and "T &lt;x&gt;" in svg and "e&amp;" in svg
    assert "a<b" not in svg


def test_line_chart_without_data_and_bad_input() -> None:
    svg = line_chart([], title="empty", xlabel="x", ylabel="y")
    check_html(svg)
    assert "no data" in svg
    with pytest.raises(ValueError, match="x values"):
        line_chart([("a", [1, 2], [1])], title="t", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="limits"):
        line_chart([("a", [1], [1])], title="t", xlabel="x", ylabel="y", xlim=(1, 1))


def test_line_chart_thins_long_series() -> None:
    n = 5000
    xs = [i / (n - 1) for i in range(n)]
    svg = line_chart(
        [("a", xs, [math.sqrt(x) for x in xs])], title="t", xlabel="x", ylabel="y", xlim=(0, 1), ylim=(0, 1)
    )
    (line,) = polylines(svg, PALETTE[0])
    assert len(line) < 1000
    left, top, right, bottom = plot_area(360, 300)
    assert line[0] == pytest.approx((left, bottom)) and line[-1] == pytest.approx((right, top))
    assert "<circle" not in svg


def test_confusion_svg_counts_escaping_and_nan() -> None:
    svg = confusion_svg([[5, 1], [NAN, 12]], ["neg", TRICKY], title="CM & co")
    check_html(svg)
    assert ">12</text>" in svg and ">5</text>" in svg and ">\u2013</text>" in svg
    assert TRICKY_ESCAPED in svg and "CM &amp; co" in svg
    assert TRICKY not in svg
    check_html(confusion_svg([], [], title="none"))


def test_nice_ticks_and_formatting() -> None:
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks = nice_ticks(0.31, 0.72)
    assert ticks[0] <= 0.31 and ticks[-1] >= 0.72 and len(ticks) <= 7
    assert len(nice_ticks(3.0, 3.0)) >= 2
    assert fmt(NAN) == "\u2013" and fmt(None) == "\u2013" and fmt("x") == "\u2013"
    assert fmt(0.91234) == "0.912" and fmt(1234) == "1,234" and fmt(True) == "\u2013"
    assert fmt_ci(0.9123, [0.881, 0.94]) == "0.912 (0.881\u20130.940)"
    assert fmt_ci(0.9, [NAN, 0.95]) == "0.900"
    assert fmt_ci(NAN, [0.1, 0.2]) == "\u2013"


def test_calibration_line_names_a_temperature_kept_at_one() -> None:
    cal = {"method": "temperature", "temperature": 1.0, "fitted_temperature": 0.83, "ece": 0.05, "brier": 0.1}
    cal["uncalibrated"] = {"ece": 0.05, "brier": 0.1}
    metrics = {"dataset": "x", "task": "binary", "splits": {"test": {"auc": 0.9, "calibration": cal}}}
    assert "temperature 1.00; fitted 0.83, not significant on validation" in render_report(title="t", metrics=metrics)
    cal["temperature"] = cal["fitted_temperature"]
    page = render_report(title="t", metrics=metrics)
    assert "temperature 0.83 (" not in page and "temperature 0.83)" in page
