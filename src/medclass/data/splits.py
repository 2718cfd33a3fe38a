"""Seeded, stratified splits that keep every patient's images in one split, for arrays and manifests."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import DataError
from medclass.utils.files import atomic_path


def _strata(labels: np.ndarray) -> np.ndarray:
    """A stratum key per row: the class index, the label pattern for multi-label, -1 for unknown."""
    if labels.ndim == 2:
        filled = np.nan_to_num(labels, nan=0.5)
        _, key = np.unique(filled, axis=0, return_inverse=True)
        return key.reshape(-1)
    key = np.where(np.isnan(labels), -1, labels).astype(np.int64)
    return key


def split_indices(
    labels: np.ndarray,
    *,
    val: float,
    test: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split rows into train/val/test, stratified by label and, when ``groups`` is given, by group.

    With groups (patient IDs), whole groups are assigned: no patient ends up in two splits. Groups
    are stratified by the label of their first row, which keeps class proportions close when a
    patient's images share a label (the common case).

    Args:
        labels: ``(N,)`` or ``(N, L)`` float labels (NaN unknown).
        val: Fraction of rows (or groups) for validation.
        test: Fraction for test.
        seed: Seed of the shuffle.
        groups: Optional ``(N,)`` group identifiers.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` sorted row indices.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"invalid split fractions val={val}, test={test}")
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    if groups is None:
        unit_of_row = np.arange(n)
        unit_strata = _strata(labels)
    else:
        uniq, unit_of_row = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        first_row = np.full(len(uniq), -1)
        first_row[unit_of_row[::-1]] = np.arange(n)[::-1]
        unit_strata = _strata(labels)[first_row]
    assign = np.empty(len(unit_strata), dtype=np.int8)  # 0 train, 1 val, 2 test
    for stratum in np.unique(unit_strata):
        units = np.flatnonzero(unit_strata == stratum)
        rng.shuffle(units)
        k = len(units)
        n_test = int(round(k * test))
        n_val = int(round(k * val))
        assign[units[:n_test]] = 2
        assign[units[n_test : n_test + n_val]] = 1
        assign[units[n_test + n_val :]] = 0
    row_assign = assign[unit_of_row]
    return {name: np.flatnonzero(row_assign == code) for code, name in enumerate(("train", "val", "test"))}


def split_manifest(
    manifest: str | Path,
    out: str | Path,
    *,
    by: str | None = "patient_id",
    stratify: str | None = "label",
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Add (or replace) a ``split`` column in a CSV manifest: grouped, stratified and seeded.

    Rows marked ``readable=false`` keep an empty split (training skips them). Rows with an empty
    group value are their own group.

    Args:
        manifest: Input CSV (``medclass index`` output or any manifest).
        out: Output CSV, written atomically (may be the input).
        by: Column whose rows must stay together (``patient`` means ``patient_id``); ``None`` splits rows.
        stratify: Column whose class proportions each split keeps; ``None`` for none.
        val: Validation fraction.
        test: Test fraction.
        seed: Seed.

    Returns:
        ``{split: {"rows", "groups", "classes": {label: count}}}`` for the three splits.

    Raises:
        DataError: Unreadable CSV, missing column, bad fractions, or (never expected) a group in two splits.
    """
    manifest = Path(manifest)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    except FileNotFoundError:
        raise DataError(f"{manifest}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{manifest}: cannot read CSV ({err})") from None
    by = "patient_id" if by == "patient" else by
    for col in (by, stratify):
        if col and col not in header:
            raise DataError(f"{manifest}: no column '{col}' (found: {', '.join(header)})")
    use = [i for i, r in enumerate(rows) if r.get("readable", "true").strip().lower() not in ("false", "0", "no")]
    if not use:
        raise DataError(f"{manifest}: no readable rows to split")
    classes = [rows[i][stratify].strip() if stratify else "" for i in use]
    names = sorted(set(classes) - {""})
    labels = np.array([names.index(c) if c else np.nan for c in classes], dtype=np.float32)
    groups = None
    if by:
        groups = np.array([rows[i][by].strip() or f"\0row{i}" for i in use], dtype=object)
    idx = split_indices(labels, val=val, test=test, seed=seed, groups=groups)
    for r in rows:
        r["split"] = ""
    summary: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for name, part in idx.items():
        part_groups: set[str] = set()
        counts: dict[str, int] = {}
        for j in part:
            row = rows[use[j]]
            row["split"] = name
            if groups is not None:
                g = str(groups[j])
                if seen.setdefault(g, name) != name:
                    raise DataError(f"{manifest}: internal error, a group landed in two splits")
                part_groups.add(g)
            counts[classes[j] or "(none)"] = counts.get(classes[j] or "(none)", 0) + 1
        summary[name] = {"rows": len(part), "groups": len(part_groups) if by else len(part), "classes": counts}
    moved = Path(out).resolve().parent != manifest.resolve().parent
    if moved and "path" in header:  # relative paths resolve against the manifest's folder: keep them valid
        for r in rows:
            if r["path"] and not Path(r["path"]).is_absolute():
                r["path"] = os.path.relpath((manifest.parent / r["path"]).resolve(), Path(out).resolve().parent)
    fields = header + ([] if "split" in header else ["split"])
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return summary
