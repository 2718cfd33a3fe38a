"""Seeded, stratified splits that keep every patient's images in one split."""

from __future__ import annotations

import numpy as np

from medclass.errors import DataError


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
