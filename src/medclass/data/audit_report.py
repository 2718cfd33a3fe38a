"""Printing and saving a data audit: the terminal table, the JSON form and the ``medclass audit`` command.

The findings themselves come from :func:`medclass.data.audit.audit`; this module only presents them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from medclass.data.audit import AuditReport, NearDuplicates, SplitCensus, audit


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else str(n)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Aligned plain-text rows: the first column left-aligned, the others right-aligned."""
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    return [
        "  " + "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))) for r in cells
    ]


def _balance(splits: list[SplitCensus]) -> list[str]:
    names = list(dict.fromkeys(c for s in splits for c in s.classes))
    rows = [[c, *[_pct(s.classes.get(c, 0), s.images) for s in splits]] for c in names]
    return _table(["class", *[s.split for s in splits]], [*rows, ["total", *[s.images for s in splits]]])


def _near_lines(near: list[NearDuplicates]) -> list[str]:
    lines = _table(
        ["scope", "pairs", "images", "label conflicts"], [[r.scope, r.pairs, r.images, r.label_conflicts] for r in near]
    )
    shown = [r for r in near if r.pairs and r.scope != "across"]  # "across" repeats the pairs of splits
    lines += [f"  e.g. {r.scope}: {a} ~ {b} (distance {d})" for r in shown for a, b, d in r.examples[:1]]
    return lines


def format_report(report: AuditReport) -> str:
    """The report as a plain-text summary for the terminal (no patient IDs, a few example file names)."""
    r = report
    splits = ", ".join(s.split for s in r.splits) if r.splits_given else "none given"
    out = [f"Data audit: {r.source} ({r.kind}; {r.images} images, {len(r.label_names)} classes; splits: {splits})", ""]
    out += ["Class balance" + (" (positives per label)" if r.task == "multilabel" else ""), *_balance(r.splits), ""]
    out.append("Exact duplicates (identical decoded pixels)")
    exact = r.exact if r.splits_given else r.exact[:-1]  # no "across" row without splits
    rows = [[e.scope, e.groups, e.images, e.label_conflicts, e.patient_conflicts if r.patients else "-"] for e in exact]
    out += _table(["scope", "groups", "images", "label conflicts", "patient conflicts"], rows)
    out += [f"  e.g. {e.scope}: {' = '.join(e.examples[0])}" for e in exact if e.examples]
    if r.byte_identical is not None:
        b = r.byte_identical
        out.append(
            f"  byte-identical files: {b['groups']} groups, {b['files']} files; "
            f"medclass train keeps one of each (drops {b['dropped_by_training']})"
        )
    out += ["", f"Near duplicates (pHash distance <= {r.near_distance} of 63 bits and thumbnail correlation"]
    out.append(
        f"  >= {r.min_correlation}; exact duplicates excluded; {r.near_rejected} look-alike hash matches rejected)"
    )
    out += [*_near_lines(r.near if r.splits_given else r.near[:-1]), ""]
    if r.patients is not None:
        p = r.patients
        pairs = ", ".join(f"{k}: {v}" for k, v in p.by_pair.items())
        line = f"  {p.patients} patients; {p.shared} in more than one split"
        out += ["Patients (IDs never shown)", line + (f" ({p.images} images; {pairs})" if p.shared else ""), ""]
    out.append("Census")
    out.append("  sizes: " + ", ".join(f"{s} {c}" for s, c in r.sizes))
    modes = ", ".join(f"{k} {v}" for k, v in r.modes.items())
    out.append(f"  decoded: {modes}; stored: " + ", ".join(f"{k} {v}" for k, v in r.file_modes.items()))
    rows = [[s.split, s.images, s.mean, s.std, f"{s.mean_min}..{s.mean_max}", s.blank] for s in r.splits]
    out += _table(["split", "images", "mean", "std", "image means", "blank"], rows)
    out.append(f"  unreadable files: {len(r.unreadable)}")
    out += [f"    {name}: {err}" for name, err in r.unreadable[:10]]
    if len(r.unreadable) > 10:
        out.append(f"    ... and {len(r.unreadable) - 10} more (see --json)")
    if r.training is not None:
        t = r.training
        out += ["", f"Training split (what medclass train makes: seed {t.seed}, val {t.val}, test {t.test})"]
        out.append(f"  byte-identical files dropped before splitting: {t.duplicates_dropped}")
        out += _balance(t.splits)
        out.append(f"  pixel-identical groups (different bytes) across its splits: {t.exact.groups}")
        out.append("  near duplicates across its splits:")
        out += _near_lines(t.near)
    if r.columns or r.columns_split:
        out += ["", f"Columns as predictors of the label on their own ({r.columns_split})"]
        rows = [[c.column, c.kind, c.metric.replace("_", " "), f"{c.score:.3f}"] for c in r.columns]
        if rows:  # the finding, left-aligned after the table
            lines = _table(["column", "kind", "held-out", "score"], rows)
            out += [f"{line}  {f}" for line, f in zip(lines, ["finding", *[c.verdict() for c in r.columns]])]
    out.append("")
    if r.column_warnings:
        out += ["Columns that give the label away (never use them as model inputs, e.g. --tabular):"]
        out += [f"  - {w}" for w in r.column_warnings]
    if r.leakage_found:
        out += ["Leakage: FOUND", *[f"  - {x}" for x in r.reasons]]
    elif r.splits_given:
        out.append("Leakage: none found (no exact or near duplicates, no patients across splits)")
    else:
        out.append("Leakage: none found (no exact duplicates with conflicting labels)")
    out.append(f"({r.seconds:.1f} s)")
    return "\n".join(out)


def report_to_dict(report: AuditReport) -> dict[str, Any]:
    """The report as plain JSON-able data (no patient IDs)."""
    return asdict(report)


def run_audit(
    spec: str,
    *,
    strict: bool = False,
    near_distance: int = 4,
    json_out: str | None = None,
    min_correlation: float = 0.97,
    label_column: str | None = None,
    group_column: str | None = None,
) -> int:
    """``medclass audit``: print the report, optionally write it as JSON, return the exit status.

    Args:
        spec: What to audit (see :func:`audit`).
        strict: Exit with 1 when leakage is found.
        near_distance: Largest pHash distance of a near duplicate.
        json_out: Write the report here as JSON (atomically).
        min_correlation: Smallest thumbnail correlation of a near duplicate.
        label_column: A manifest's label column.
        group_column: A manifest's group column.

    Returns:
        1 when ``strict`` and leakage was found, else 0.
    """
    import sys

    from medclass.utils.files import write_json

    report = audit(
        spec,
        near_distance=near_distance,
        min_correlation=min_correlation,
        progress=sys.stderr.isatty(),
        label_column=label_column,
        group_column=group_column,
    )
    print(format_report(report))
    if json_out:
        write_json(json_out, report_to_dict(report))
    return 1 if strict and report.leakage_found else 0
