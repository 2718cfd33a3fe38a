"""Manifest columns that give the label away: each column alone, fitted on a training split, scored on the rest.

A column that predicts the label by itself is either an answer key (a field recorded *because of* the
diagnosis, such as how it was confirmed) or a shortcut a model will take instead of reading the image. Each
column gets a tiny predictor fitted on the training rows only and is scored on the held-out rows:

* **categorical** columns (and numeric ones with at most 32 distinct training values): a per-value lookup,
  each value predicting its training rows' majority class (a value unseen in training predicts the overall
  majority; a missing cell is a value of its own, since missingness can leak too);
* **numeric** columns with more values: a depth-4 decision tree on that one column (Gini splits, leaves of at
  least 1% of the training rows), whose leaves are then the values.

Three findings, each reported per column (:class:`ColumnLeak`):

* **leaks the label**: held-out balanced accuracy >= 0.95 (ROC AUC >= 0.98 for binary labels, scoring each
  value by its training share of the positive class);
* **determines a class**: values whose training rows (at least 20) are >= 99% one class, and whose held-out
  rows (at least 10) are too, together cover at least a quarter of that class's held-out rows. This finds
  a column that settles a large part of one class without predicting every class (HAM10000's ``dx_type``:
  ``follow_up`` occurs only for naevi);
* **derived from the label**: every class (with at least 20 rows) has one value of the column on >= 99% of
  its rows, and not all classes the same value: a coarser copy of the label (a binary column made from a
  multi-class label).

Pure functions of arrays; :func:`medclass.data.audit.audit` reads the manifest and reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medclass.data.tabular import is_missing, read_number
from medclass.metrics.classification import balanced_accuracy, roc_auc

BALANCED_ACCURACY_LEAK = 0.95
AUC_LEAK = 0.98
PURITY = 0.99
MIN_TRAIN_ROWS = 20
MIN_HELDOUT_ROWS = 10
MIN_COVERAGE = 0.25
MAX_LOOKUP_VALUES = 32
TREE_DEPTH = 4
_MISSING = "<missing>"


@dataclass
class ColumnLeak:
    """What one column alone says about the label.

    Attributes:
        column: The column.
        kind: ``categorical``, ``numeric`` (per-value lookup) or ``numeric-tree``.
        metric: ``balanced_accuracy`` (multi-class) or ``auc`` (binary), on the held-out rows.
        score: That metric.
        leaks: ``score`` reaches the threshold: the column leaks the label.
        determines: Values that settle one class: ``{"class", "values", "heldout_rows", "coverage"}`` per
            class, ``coverage`` the share of that class's held-out rows they hold.
        derived: The label determines the column (a coarser copy of the label).
        train_rows: Rows the predictor was fitted on.
        heldout_rows: Rows it was scored on.
    """

    column: str
    kind: str
    metric: str
    score: float
    leaks: bool = False
    determines: list[dict[str, Any]] = field(default_factory=list)
    derived: bool = False
    train_rows: int = 0
    heldout_rows: int = 0

    @property
    def flagged(self) -> bool:
        """Any finding: the column should not be given to a model as an input."""
        return self.leaks or bool(self.determines) or self.derived

    def verdict(self) -> str:
        """One line: ``leaks the label``, ``determines nv (follow_up: 100% of 1120 held-out rows; 55% of nv)``,
        ``derived from the label``, or ``-``."""
        if self.leaks:
            return "leaks the label"
        parts = [
            f"determines {d['class']} ({', '.join(d['values'])}: {100 * d['precision']:.0f}% of "
            f"{d['heldout_rows']} held-out rows; {100 * d['coverage']:.0f}% of {d['class']})"
            for d in self.determines
        ]
        if self.derived:
            parts.append("derived from the label")
        return "; ".join(parts) or "-"


def tree_thresholds(x: np.ndarray, y: np.ndarray, k: int, *, depth: int = TREE_DEPTH, min_leaf: int = 5) -> list[float]:
    """Split points of a depth-limited decision tree on one numeric feature (Gini impurity), sorted.

    Args:
        x: ``(N,)`` values.
        y: ``(N,)`` class indices ``0..k-1``.
        k: Number of classes.
        depth: Largest depth (up to ``2**depth`` leaves).
        min_leaf: Fewest rows in a leaf.
    """
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    out: list[float] = []

    def split(lo: int, hi: int, level: int) -> None:
        n = hi - lo
        if level == 0 or n < 2 * min_leaf:
            return
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y[lo:hi]] = 1
        left = np.cumsum(onehot, axis=0)[:-1]  # counts of rows lo..i, for a cut after i
        right = left[-1] + onehot[-1] - left
        nl = np.arange(1, n, dtype=np.float64)
        nr = n - nl
        gini = nl - (left**2).sum(1) / nl + nr - (right**2).sum(1) / nr  # n_side * (1 - sum p^2), both sides
        ok = (x[lo + 1 : hi] > x[lo : hi - 1]) & (nl >= min_leaf) & (nr >= min_leaf)
        if not ok.any():
            return
        gini[~ok] = np.inf
        i = int(np.argmin(gini))
        parent = n - (left[-1] + onehot[-1]) @ (left[-1] + onehot[-1]) / n
        if gini[i] >= parent - 1e-12:  # no impurity decrease
            return
        out.append(float((x[lo + i] + x[lo + i + 1]) / 2))
        split(lo, lo + i + 1, level - 1)
        split(lo + i + 1, hi, level - 1)

    split(0, len(x), depth)
    return sorted(out)


def _keys(values: np.ndarray, train: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, str, dict[str, str]]:
    """Each row's value as a comparable key, the column's kind, and the display text of tree leaves."""
    missing = np.array([is_missing(v) for v in values])
    numbers = [None if m else read_number(v) for v, m in zip(values, missing, strict=True)]
    numeric = all(n is not None for n, m, t in zip(numbers, missing, train, strict=True) if t and not m)
    numeric = numeric and any(t and not m for m, t in zip(missing, train, strict=True))
    if not numeric:
        keys = np.array([_MISSING if m else str(v).strip() for v, m in zip(values, missing, strict=True)], object)
        return keys, "categorical", {}
    x = np.array([np.nan if n is None else n for n in numbers], dtype=np.float64)
    known = train & ~missing & ~np.isnan(x)
    if len(np.unique(x[known])) <= MAX_LOOKUP_VALUES:
        keys = np.array([_MISSING if math.isnan(v) else repr(float(v)) for v in x], dtype=object)
        return keys, "numeric", {}
    cuts = tree_thresholds(x[known], y[known], k, min_leaf=max(5, int(0.01 * known.sum())))
    leaf = np.searchsorted(np.asarray(cuts), x, side="right")
    edges = [-math.inf, *cuts, math.inf]
    names = {f"leaf{i}": f"[{edges[i]:.4g}, {edges[i + 1]:.4g})" for i in range(len(edges) - 1)}
    keys = np.array([_MISSING if math.isnan(v) else f"leaf{i}" for v, i in zip(x, leaf, strict=True)], dtype=object)
    return keys, "numeric-tree", names


def check_column(
    column: str, values: np.ndarray, labels: np.ndarray, train: np.ndarray, label_names: list[str]
) -> ColumnLeak:
    """Score one column as a predictor of the label (see the module docstring).

    Args:
        column: Its name.
        values: ``(N,)`` raw cells.
        labels: ``(N,)`` class indices (no NaN).
        train: ``(N,)`` bool, the rows the predictor is fitted on; the others score it.
        label_names: Class names, by index.
    """
    k = len(label_names)
    y = labels.astype(np.int64)
    keys, kind, names = _keys(values, train, y, k)
    held = ~train
    uniq, inverse = np.unique(keys, return_inverse=True)
    counts = np.zeros((len(uniq), k))
    np.add.at(counts, (inverse[train], y[train]), 1)
    seen = counts.sum(1) > 0
    prior = np.bincount(y[train], minlength=k) / max(int(train.sum()), 1)
    majority = np.where(seen, counts.argmax(1), int(prior.argmax()))
    if k == 2:
        share = np.where(seen, counts[:, 1] / np.maximum(counts.sum(1), 1), prior[1])
        metric, score = "auc", roc_auc(y[held], share[inverse[held]])
    else:
        metric, score = "balanced_accuracy", balanced_accuracy(y[held], majority[inverse[held]], num_classes=k)
    result = ColumnLeak(column, kind, metric, float(score), train_rows=int(train.sum()), heldout_rows=int(held.sum()))
    result.leaks = bool(score >= (AUC_LEAK if k == 2 else BALANCED_ACCURACY_LEAK))
    if result.leaks:
        return result
    held_counts = np.zeros((len(uniq), k))
    np.add.at(held_counts, (inverse[held], y[held]), 1)
    class_held = held_counts.sum(0)
    for c in range(k):
        n_train, n_held = counts.sum(1), held_counts.sum(1)
        pure = (
            (n_train >= MIN_TRAIN_ROWS)
            & (counts[:, c] >= PURITY * n_train)
            & (n_held >= MIN_HELDOUT_ROWS)
            & (held_counts[:, c] >= PURITY * n_held)
        )
        if not pure.any() or class_held[c] == 0:
            continue
        coverage = held_counts[pure, c].sum() / class_held[c]
        if coverage >= MIN_COVERAGE:
            result.determines.append(
                {
                    "class": label_names[c],
                    "values": [names.get(str(v), str(v)) for v in uniq[pure]],
                    "precision": float(held_counts[pure, c].sum() / n_held[pure].sum()),
                    "heldout_rows": int(n_held[pure].sum()),
                    "coverage": float(coverage),
                }
            )
    if kind != "numeric-tree":
        every = np.zeros((len(uniq), k))
        np.add.at(every, (inverse, y), 1)
        big = every.sum(0) >= MIN_TRAIN_ROWS
        modes = every.argmax(0)
        pure_classes = every[modes, np.arange(k)] >= PURITY * every.sum(0)
        result.derived = bool(big.sum() >= 2 and pure_classes[big].all() and len(set(modes[big].tolist())) >= 2)
    return result


def column_leaks(
    columns: dict[str, np.ndarray], labels: np.ndarray, train: np.ndarray, label_names: list[str]
) -> list[ColumnLeak]:
    """:func:`check_column` for every column, on the rows with a known label.

    Args:
        columns: Column name -> ``(N,)`` raw cells.
        labels: ``(N,)`` class indices, NaN = unknown (those rows are left out).
        train: ``(N,)`` bool: the training rows; the others are held out.
        label_names: Class names, by index.

    Returns:
        One :class:`ColumnLeak` per column, in order; empty when either side has no labelled rows.
    """
    known = ~np.isnan(labels)
    train = np.asarray(train, dtype=bool) & known
    held = ~train & known
    if not train.any() or not held.any():
        return []
    rows = train | held
    return [
        check_column(c, np.asarray(v, dtype=object)[rows], labels[rows], train[rows], label_names)
        for c, v in columns.items()
    ]


def manifest_column_leaks(
    spec: str, *, label_column: str | None = None, group_column: str | None = None, seed: int = 0
) -> tuple[list[ColumnLeak], str]:
    """:func:`column_leaks` for a CSV manifest: every column but path, split, readable, error, the label and the
    group, fitted on the training rows (the given ones, else the seeded split by group that training makes).

    Returns:
        ``(findings, which rows were fitted and scored)``; no findings for multi-label manifests.
    """
    import csv

    from medclass.data.files import read_manifest
    from medclass.data.splits import split_indices

    columns = {"label_column": label_column, "group_column": group_column}
    with open(spec, newline="", encoding="utf-8-sig") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    table = read_manifest(spec, **columns)
    if table.task == "multilabel" or table.labels.ndim == 2:
        return [], "multi-label manifest: columns not checked"
    group = group_column or next((c for c in ("patient_id", "group_id") if c in header), None)
    skip = {"path", "split", "readable", "error", group, *table.label_columns}
    candidates = [h for h in header if h not in skip]
    if not candidates:
        return [], "no other columns"
    table = read_manifest(spec, **columns, tabular=candidates)
    names = table.label_names or [str(i) for i in range(int(np.nanmax(table.labels, initial=0)) + 1)]
    if table.splits is not None:
        train, where = table.splits == "train", "fitted on the given train split, scored on val and test"
    else:
        idx = split_indices(table.labels, val=0.1, test=0.2, seed=seed, groups=table.patient_ids)
        train = np.zeros(len(table.labels), dtype=bool)
        train[idx["train"]] = True
        by = f" by {group}" if table.patient_ids is not None else ""
        where = f"fitted on the seeded training split (seed {seed}{by}), scored on its val and test"
    found = column_leaks(table.tabular.columns, table.labels, train, names)
    patients = set() if table.patient_ids is None else {str(p).strip() for p in table.patient_ids}
    for leak in found:  # never print a patient ID that another column repeats
        for d in leak.determines:
            d["values"] = ["(a patient ID)" if v in patients else v for v in d["values"]]
    return found, where
