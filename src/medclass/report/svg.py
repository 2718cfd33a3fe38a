"""Tiny dependency-free SVG charts for the HTML report.

The functions here only draw what they are given: no metric is computed. Every chart is returned as
one ``<svg>`` string that can be inlined in an HTML page (no ``xmlns``, no ids, no external
resources) and every piece of text is escaped with :func:`html.escape`.

Colours come from the Okabe-Ito palette, which stays distinguishable under the common forms of
colour blindness; after eight series the colours repeat with a dash pattern.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "confusion_svg", "line_chart", "nice_ticks", "plot_area"]

#: Okabe-Ito colours, ordered so that the first few contrast well on white (yellow last).
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
_DASHES: tuple[str, ...] = ("", "6 3", "2 2", "8 3 2 3")

MARGIN_LEFT = 52.0
MARGIN_RIGHT = 14.0
MARGIN_TOP = 26.0
MARGIN_BOTTOM = 40.0

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"'
_CHAR_W = 6.2  # rough width of one 11px character, used only for layout
_LEGEND_ROW = 15.0
_MARKER_MAX_POINTS = 40
_GRID = "#e6e6e6"
_AXIS = "#777777"
_TEXT = "#333333"

Series = tuple[str, Sequence[float], Sequence[float]]


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _f(v: float) -> str:
    """Formats an SVG coordinate compactly."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _finite(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    fv = float(v)
    return fv if math.isfinite(fv) else None


def plot_area(width: float, height: float, *, tick_chars: int = 4) -> tuple[float, float, float, float]:
    """Returns the plot rectangle of a :func:`line_chart` as ``(left, top, right, bottom)`` pixels.

    Args:
        width: Chart width passed to :func:`line_chart`.
        height: Chart height passed to :func:`line_chart` (the legend is drawn below this).
        tick_chars: Length of the longest y tick label; labels longer than four characters
            widen the left margin.

    Returns:
        The pixel bounds of the area where data are drawn; ``(xmin, ymin)`` maps to
        ``(left, bottom)`` and ``(xmax, ymax)`` to ``(right, top)``.
    """
    left = max(MARGIN_LEFT, 27 + _CHAR_W * tick_chars)
    return left, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Returns round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering ``[lo, hi]``.

    Args:
        lo: Lower end of the range.
        hi: Upper end of the range; expanded around ``lo`` when not larger than it.
        max_ticks: Rough upper bound on the number of ticks.

    Returns:
        Increasing tick values; the first is ``<= lo`` and the last ``>= hi``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, lo + pad
    raw = (hi - lo) / max(1, max_ticks - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = 10.0 * mag
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= raw * (1 - 1e-9):
            step = m * mag
            break
    start = math.floor(lo / step + 1e-9)
    end = math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(start, end + 1)]


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    if not ticks:
        return []
    big = max(abs(t) for t in ticks)
    step = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else (abs(ticks[0]) or 1.0)
    if big >= 1e5 or (0 < step < 1e-4):
        return [f"{t:.3g}" for t in ticks]
    for d in range(7):
        if all(abs(round(t, d) - t) <= step * 1e-6 for t in ticks):
            break
    return [f"{t:.{d}f}" for t in ticks]


def _axis_limits(values: list[float], lim: tuple[float, float] | None) -> tuple[float, float, list[float]]:
    """Resolves axis limits and ticks, from ``lim`` when given, otherwise from the data."""
    if lim is not None:
        lo, hi = float(lim[0]), float(lim[1])
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ValueError(f"invalid axis limits {lim!r}")
        span = hi - lo
        ticks = [t for t in nice_ticks(lo, hi) if lo - span * 1e-9 <= t <= hi + span * 1e-9]
        return lo, hi, ticks
    ticks = nice_ticks(min(values), max(values)) if values else nice_ticks(0.0, 1.0)
    return ticks[0], ticks[-1], ticks


def _simplify(points: list[tuple[float, float]], tol: float = 0.5) -> list[tuple[float, float]]:
    """Drops points closer than ``tol`` pixels to the last kept one and inner points of straight runs."""
    if len(points) <= 2:
        return points
    kept = [points[0]]
    for p in points[1:-1]:
        q = kept[-1]
        if abs(p[0] - q[0]) < tol and abs(p[1] - q[1]) < tol:
            continue
        kept.append(p)
    last = points[-1]
    if len(kept) > 1 and abs(last[0] - kept[-1][0]) < tol and abs(last[1] - kept[-1][1]) < tol:
        kept[-1] = last
    else:
        kept.append(last)
    out = [kept[0]]
    for i in range(1, len(kept) - 1):
        a, b, c = out[-1], kept[i], kept[i + 1]
        same_x = a[0] == b[0] == c[0] and min(a[1], c[1]) <= b[1] <= max(a[1], c[1])
        same_y = a[1] == b[1] == c[1] and min(a[0], c[0]) <= b[0] <= max(a[0], c[0])
        if not (same_x or same_y):
            out.append(b)
    out.append(kept[-1])
    return out


def _style(index: int) -> tuple[str, str]:
    colour = PALETTE[index % len(PALETTE)]
    dash = _DASHES[(index // len(PALETTE)) % len(_DASHES)]
    return colour, dash


def _legend(entries: list[tuple[int, str]], width: float, y0: float) -> tuple[list[str], float]:
    """Lays ``(series index, label)`` entries out in columns below the chart; returns SVG parts and height."""
    if not entries:
        return [], 0.0
    shown = [lab if len(lab) <= 34 else lab[:33] + "\u2026" for _, lab in entries]
    col_w = 26 + _CHAR_W * max(len(s) for s in shown)
    usable = width - MARGIN_LEFT - MARGIN_RIGHT + 30
    cols = max(1, min(len(shown), int(usable // col_w)))
    rows = math.ceil(len(shown) / cols)
    parts = []
    for n, ((index, label), text) in enumerate(zip(entries, shown)):
        r, c = divmod(n, cols)
        x = MARGIN_LEFT - 30 + c * col_w
        y = y0 + 8 + r * _LEGEND_ROW
        colour, dash = _style(index)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<g><title>{_e(label)}</title><line x1="{_f(x)}" y1="{_f(y)}" x2="{_f(x + 18)}" y2="{_f(y)}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{_f(x + 22)}" y="{_f(y + 4)}" fill="{_TEXT}">{_e(text)}</text></g>'
        )
    return parts, rows * _LEGEND_ROW + 4


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
    width: int = 360,
    height: int = 300,
) -> str:
    """Draws one or more lines on shared axes.

    Non-finite values break a line into separate segments. Short series (up to 40 points) get point
    markers; long ones are thinned to about half a pixel. The legend, one entry per series, is drawn
    below the chart, so the returned SVG is ``height`` plus the legend's height tall.

    Args:
        series: ``(label, xs, ys)`` triples; ``xs`` and ``ys`` have the same length.
        title: Chart title.
        xlabel: X-axis label.
        ylabel: Y-axis label.
        xlim: ``(min, max)`` of the x axis; taken from the data (rounded outwards) when omitted.
        ylim: ``(min, max)`` of the y axis; taken from the data (rounded outwards) when omitted.
        diagonal: Draw the dashed ``y = x`` reference line (e.g. chance level of a ROC curve).
        width: Width in pixels.
        height: Height in pixels of the chart without its legend.

    Returns:
        An ``<svg>`` element as a string.

    Raises:
        ValueError: If a series' ``xs`` and ``ys`` differ in length or a limit is invalid.
    """
    cleaned: list[tuple[str, list[float | None], list[float | None]]] = []
    for label, xs, ys in series:
        if len(xs) != len(ys):
            raise ValueError(f"series {label!r}: {len(xs)} x values but {len(ys)} y values")
        cleaned.append((str(label), [_finite(v) for v in xs], [_finite(v) for v in ys]))
    all_x = [x for _, xs, ys in cleaned for x, y in zip(xs, ys) if x is not None and y is not None]
    all_y = [y for _, xs, ys in cleaned for x, y in zip(xs, ys) if x is not None and y is not None]
    x_lo, x_hi, x_ticks = _axis_limits(all_x, xlim)
    y_lo, y_hi, y_ticks = _axis_limits(all_y, ylim)
    x_labels, y_labels = _tick_labels(x_ticks), _tick_labels(y_ticks)
    left, top, right, bottom = plot_area(width, height, tick_chars=max((len(t) for t in y_labels), default=0))

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    entries = [(i, label) for i, (label, _, _) in enumerate(cleaned) if label]
    legend_parts, legend_h = _legend(entries, width, float(height))
    total_h = height + legend_h
    out = [
        f'<svg class="chart" width="{width}" height="{_f(total_h)}" viewBox="0 0 {width} {_f(total_h)}" '
        f'role="img" {_FONT} font-size="11"><title>{_e(title)}</title>',
        f'<rect x="0" y="0" width="{width}" height="{_f(total_h)}" fill="#ffffff"/>',
        f'<text x="{_f(width / 2)}" y="16" text-anchor="middle" font-size="13" font-weight="600" '
        f'fill="{_TEXT}">{_e(title)}</text>',
    ]
    for t, text in zip(x_ticks, x_labels):
        x = _f(sx(t))
        out.append(f'<line x1="{x}" y1="{_f(top)}" x2="{x}" y2="{_f(bottom)}" stroke="{_GRID}"/>')
        out.append(f'<text x="{x}" y="{_f(bottom + 14)}" text-anchor="middle" fill="{_TEXT}">{_e(text)}</text>')
    for t, text in zip(y_ticks, y_labels):
        y = _f(sy(t))
        out.append(f'<line x1="{_f(left)}" y1="{y}" x2="{_f(right)}" y2="{y}" stroke="{_GRID}"/>')
        out.append(f'<text x="{_f(left - 5)}" y="{_f(sy(t) + 4)}" text-anchor="end" fill="{_TEXT}">{_e(text)}</text>')
    out.append(
        f'<polyline points="{_f(left)},{_f(top)} {_f(left)},{_f(bottom)} {_f(right)},{_f(bottom)}" '
        f'fill="none" stroke="{_AXIS}"/>'
    )
    out.append(
        f'<text x="{_f((left + right) / 2)}" y="{_f(height - 8)}" text-anchor="middle" fill="{_TEXT}">'
        f"{_e(xlabel)}</text>"
    )
    cy = (top + bottom) / 2
    out.append(
        f'<text x="12" y="{_f(cy)}" text-anchor="middle" transform="rotate(-90 12 {_f(cy)})" fill="{_TEXT}">'
        f"{_e(ylabel)}</text>"
    )
    # Data are drawn in a nested <svg> whose viewBox equals its own position: coordinates stay those
    # of the outer chart, while anything outside the (slightly padded) plot area is clipped.
    pad = 4.0
    vb = f"{_f(left - pad)} {_f(top - pad)} {_f(right - left + 2 * pad)} {_f(bottom - top + 2 * pad)}"
    out.append(
        f'<svg x="{_f(left - pad)}" y="{_f(top - pad)}" width="{_f(right - left + 2 * pad)}" '
        f'height="{_f(bottom - top + 2 * pad)}" viewBox="{vb}" overflow="hidden">'
    )
    if diagonal:
        d_lo, d_hi = max(x_lo, y_lo), min(x_hi, y_hi)
        if d_hi > d_lo:
            out.append(
                f'<line class="diagonal" x1="{_f(sx(d_lo))}" y1="{_f(sy(d_lo))}" x2="{_f(sx(d_hi))}" '
                f'y2="{_f(sy(d_hi))}" stroke="#999999" stroke-dasharray="4 3"/>'
            )
    for i, (label, xs, ys) in enumerate(cleaned):
        colour, dash = _style(i)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(xs, ys):
            if x is None or y is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((sx(x), sy(y)))
        n_points = sum(len(s) for s in segments)
        out.append(f"<g><title>{_e(label)}</title>")
        for seg in segments:
            if len(seg) >= 2:
                pts = " ".join(f"{_f(px)},{_f(py)}" for px, py in _simplify(seg))
                out.append(
                    f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8" '
                    f'stroke-linejoin="round"{dash_attr}/>'
                )
            if n_points <= _MARKER_MAX_POINTS or len(seg) == 1:
                out.extend(f'<circle cx="{_f(px)}" cy="{_f(py)}" r="2.4" fill="{colour}"/>' for px, py in seg)
        out.append("</g>")
    out.append("</svg>")
    if not all_x:
        out.append(
            f'<text x="{_f((left + right) / 2)}" y="{_f(cy)}" text-anchor="middle" fill="#999999">no data</text>'
        )
    out.extend(legend_parts)
    out.append("</svg>")
    return "".join(out)


def _ramp(t: float) -> str:
    """Maps ``t`` in [0, 1] to a light-to-dark single-hue blue (readable without colour vision)."""
    lo, hi = (247, 251, 255), (8, 69, 148)
    t = min(1.0, max(0.0, t))
    r, g, b = (round(a + (c - a) * t) for a, c in zip(lo, hi))
    return f"#{r:02x}{g:02x}{b:02x}"


def _cell_text(v: float | None) -> str:
    if v is None:
        return "\u2013"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}"


def confusion_svg(
    matrix: Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    title: str,
    xlabel: str = "Predicted",
    ylabel: str = "True",
    cell: float | None = None,
) -> str:
    """Draws a confusion matrix as a heat map, rows being the true and columns the predicted class.

    Cells are shaded by the row-normalised value (the fraction of each true class), show the count,
    and, when they are large enough, the row percentage; a tooltip gives both.

    Args:
        matrix: ``K x K`` counts; non-finite entries are shown as "–".
        labels: Class names, one per row/column (indices are used when the length does not match).
        title: Chart title.
        xlabel: Column axis label.
        ylabel: Row axis label.
        cell: Cell size in pixels; chosen from ``K`` when omitted.

    Returns:
        An ``<svg>`` element as a string.
    """
    rows = [[_finite(v) for v in row] for row in matrix]
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    k = max(n_rows, n_cols)
    names = [str(s) for s in labels] if len(labels) == k else [str(i) for i in range(k)]
    short = [s if len(s) <= 16 else s[:15] + "\u2026" for s in names]
    if cell is None:
        cell = max(24.0, min(56.0, 320.0 / max(1, k)))
    max_chars = max((len(s) for s in short), default=1)
    rotate = max_chars > 3 and k > 1
    left = 22 + _CHAR_W * max_chars + 8
    top = 30.0
    col_band = (_CHAR_W * max_chars * 0.72 + 12) if rotate else 16.0
    grid_w, grid_h = n_cols * cell, n_rows * cell
    width = max(left + grid_w + 12, 8 * len(title) + 16)
    height = top + grid_h + col_band + 20
    out = [
        f'<svg class="confusion" width="{_f(width)}" height="{_f(height)}" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'role="img" {_FONT} font-size="11"><title>{_e(title)}</title>',
        f'<rect x="0" y="0" width="{_f(width)}" height="{_f(height)}" fill="#ffffff"/>',
        f'<text x="{_f(width / 2)}" y="16" text-anchor="middle" font-size="13" font-weight="600" '
        f'fill="{_TEXT}">{_e(title)}</text>',
    ]
    if k == 0:
        out.append(f'<text x="{_f(width / 2)}" y="{_f(top + 14)}" text-anchor="middle" fill="#999999">no data</text>')
        out.append("</svg>")
        return "".join(out)
    digits = max((len(_cell_text(v)) for row in rows for v in row), default=1)
    font = max(6.0, min(12.0, cell * 0.85 / (0.62 * max(2, digits))))
    show_pct = cell >= 40
    for i, row in enumerate(rows):
        row_sum = sum(v for v in row if v is not None)
        for j in range(n_cols):
            v = row[j] if j < len(row) else None
            frac = (v / row_sum) if (v is not None and row_sum > 0) else None
            x, y = left + j * cell, top + i * cell
            fill = _ramp(frac) if frac is not None else "#f2f2f2"
            ink = "#ffffff" if (frac is not None and frac > 0.55) else "#222222"
            pct = f"{100 * frac:.1f}%" if frac is not None else "\u2013"
            tip = f"true {names[i]}, predicted {names[j]}: {_cell_text(v)} ({pct} of row)"
            out.append(
                f'<g><title>{_e(tip)}</title><rect x="{_f(x)}" y="{_f(y)}" width="{_f(cell)}" height="{_f(cell)}" '
                f'fill="{fill}" stroke="#ffffff"/>'
            )
            ty = y + cell / 2 + font * 0.35 - (5 if show_pct else 0)
            out.append(
                f'<text x="{_f(x + cell / 2)}" y="{_f(ty)}" text-anchor="middle" font-size="{_f(font)}" '
                f'fill="{ink}">{_e(_cell_text(v))}</text>'
            )
            if show_pct and frac is not None:
                out.append(
                    f'<text x="{_f(x + cell / 2)}" y="{_f(ty + 12)}" text-anchor="middle" font-size="9" '
                    f'fill="{ink}">{_e(f"{100 * frac:.0f}%")}</text>'
                )
            out.append("</g>")
    for i in range(n_rows):
        y = top + i * cell + cell / 2 + 4
        out.append(f'<text x="{_f(left - 5)}" y="{_f(y)}" text-anchor="end" fill="{_TEXT}">{_e(short[i])}</text>')
    base = top + grid_h + 12
    for j in range(n_cols):
        x = left + j * cell + cell / 2
        if rotate:
            out.append(
                f'<text x="{_f(x + 3)}" y="{_f(base - 2)}" text-anchor="end" transform="rotate(-45 {_f(x + 3)} '
                f'{_f(base - 2)})" fill="{_TEXT}">{_e(short[j])}</text>'
            )
        else:
            out.append(f'<text x="{_f(x)}" y="{_f(base)}" text-anchor="middle" fill="{_TEXT}">{_e(short[j])}</text>')
    out.append(
        f'<text x="{_f(left + grid_w / 2)}" y="{_f(height - 6)}" text-anchor="middle" fill="{_TEXT}">'
        f"{_e(xlabel)}</text>"
    )
    cy = top + grid_h / 2
    out.append(
        f'<text x="11" y="{_f(cy)}" text-anchor="middle" transform="rotate(-90 11 {_f(cy)})" fill="{_TEXT}">'
        f"{_e(ylabel)}</text>"
    )
    out.append("</svg>")
    return "".join(out)
