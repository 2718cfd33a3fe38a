"""Which client (hospital) holds which rows: seeded, patient-grouped partitions of a dataset.

A partition assigns whole groups (patients; a row without a patient ID is its own group) to clients, for the rows of
all three splits at once, so a client's train, validation and test rows follow one label mix and the union of the
clients' test rows is the dataset's test split (the federation's global test). Schemes:

- ``iid``: groups shuffled and dealt out in turn (equal shares, the same label mix everywhere);
- ``dirichlet:ALPHA``: label skew; for each class, the share of its groups per client is drawn from
  ``Dir(ALPHA, ..., ALPHA)`` (small ALPHA: clients dominated by one class);
- ``quantity:ALPHA``: size skew; each client's share of the groups is drawn once from ``Dir(ALPHA, ...)``;
- ``shift``: ``iid`` rows, but each client sees its images through its own fixed intensity transform
  (:func:`shift_params`, :func:`apply_shift`), like a different scanner;
- ``column:NAME``: the site is a manifest column (the manifest is read with ``tabular=[NAME]``); one client per value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from medclass.errors import ConfigError, DataError

SCHEMES = ("iid", "dirichlet", "quantity", "shift", "column")
#: Draws of a Dirichlet partition tried before giving up on every client holding ``min_rows`` rows.
MAX_DRAWS = 200


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed partition: ``kind`` (one of :data:`SCHEMES`), ``alpha`` (Dirichlet kinds) or ``column``."""

    kind: str
    alpha: float | None = None
    column: str | None = None

    def __str__(self) -> str:
        if self.alpha is not None:
            return f"{self.kind}:{self.alpha:g}"
        return f"column:{self.column}" if self.column else self.kind


def parse_partition(text: str) -> PartitionSpec:
    """``iid``, ``dirichlet:0.3``, ``quantity:1``, ``shift`` or ``column:site`` -> :class:`PartitionSpec`.

    Raises:
        ConfigError: An unknown scheme, or a missing or non-positive ALPHA.
    """
    kind, _, arg = str(text).strip().partition(":")
    kind = kind.lower()
    if kind not in SCHEMES:
        raise ConfigError(f"--partition {text}: unknown scheme '{kind}' (use {', '.join(SCHEMES)})")
    if kind in ("dirichlet", "quantity"):
        try:
            alpha = float(arg)
        except ValueError:
            raise ConfigError(f"--partition {text}: give {kind}:ALPHA with ALPHA > 0, e.g. {kind}:0.3") from None
        if not alpha > 0:
            raise ConfigError(f"--partition {text}: ALPHA must be > 0")
        return PartitionSpec(kind, alpha=alpha)
    if kind == "column":
        if not arg:
            raise ConfigError(f"--partition {text}: give column:NAME, the manifest column that names the site")
        return PartitionSpec(kind, column=arg)
    if arg:
        raise ConfigError(f"--partition {text}: {kind} takes no argument")
    return PartitionSpec(kind)


def group_units(labels: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> groups: the group index of each row ``(N,)`` and each group's class ``(G,)`` (first row's; -1 unknown).

    Args:
        labels: ``(N,)`` class indices or ``(N, L)`` 0/1 labels (NaN unknown); a multi-label group's class is the
            first positive label of its first row.
        groups: ``(N,)`` patient IDs, or ``None`` (every row its own group); empty IDs are groups of one row.
    """
    n = labels.shape[0]
    if groups is None:
        unit = np.arange(n)
    else:
        ids = np.asarray(groups).astype(str)
        ids = np.where(ids == "", np.char.add("row:", np.arange(n).astype(str)), ids)
        _, unit = np.unique(ids, return_inverse=True)
    first = np.full(int(unit.max()) + 1 if n else 0, -1)
    first[unit[::-1]] = np.arange(n)[::-1]
    if labels.ndim == 2:
        pos = np.nan_to_num(labels[first], nan=0.0) > 0.5
        cls = np.where(pos.any(1), pos.argmax(1), -1)
    else:
        cls = np.where(np.isnan(labels[first]), -1, labels[first]).astype(np.int64)
    return unit.reshape(-1), cls


def _deal(units: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Cut ``units`` (already shuffled) into consecutive runs in proportion to ``shares`` ``(K,)``; client per unit."""
    cuts = np.round(np.cumsum(shares)[:-1] * len(units)).astype(int)
    out = np.empty(len(units), dtype=np.int64)
    for k, part in enumerate(np.split(np.arange(len(units)), cuts)):
        out[part] = k
    return out


def assign_clients(
    labels: np.ndarray,
    n_clients: int,
    spec: PartitionSpec,
    *,
    seed: int,
    groups: np.ndarray | None = None,
    sites: np.ndarray | None = None,
    min_rows: int = 8,
) -> np.ndarray:
    """The client of every row: whole groups per client, the same result for the same seed.

    Args:
        labels: ``(N,)`` or ``(N, L)`` labels of all rows (every split).
        n_clients: Number of clients ``K`` (with ``column``: the number of distinct sites, or 0 for "as many").
        spec: The scheme.
        seed: Seed of the shuffle and the Dirichlet draws.
        groups: ``(N,)`` patient IDs, or ``None``.
        sites: ``(N,)`` site of each row (``column`` only).
        min_rows: Dirichlet schemes redraw until every client holds at least this many rows.

    Returns:
        ``(N,)`` int64 client index in ``0..K-1``.

    Raises:
        DataError: A patient at two sites, a missing site, or no draw giving every client ``min_rows`` rows.
    """
    unit, cls = group_units(labels, groups)
    n_units = len(cls)
    if spec.kind == "column":
        return _by_site(unit, sites, n_clients, spec.column or "")
    if n_clients < 1:
        raise ConfigError(f"--clients: need at least one client, got {n_clients}")
    if n_units < n_clients:
        raise DataError(f"{n_units} patients cannot be shared among {n_clients} clients")
    rng = np.random.default_rng(seed)
    if spec.kind in ("iid", "shift"):
        order = rng.permutation(n_units)
        client_of_unit = np.empty(n_units, dtype=np.int64)
        client_of_unit[order] = np.arange(n_units) % n_clients
        return client_of_unit[unit]
    alpha = float(spec.alpha or 1.0)
    rows_per_unit = np.bincount(unit, minlength=n_units)
    for _ in range(MAX_DRAWS):
        client_of_unit = np.empty(n_units, dtype=np.int64)
        if spec.kind == "quantity":
            order = rng.permutation(n_units)
            client_of_unit[order] = _deal(order, rng.dirichlet([alpha] * n_clients))
        else:  # dirichlet: label skew, one draw of shares per class
            for c in np.unique(cls):
                members = rng.permutation(np.flatnonzero(cls == c))
                client_of_unit[members] = _deal(members, rng.dirichlet([alpha] * n_clients))
        sizes = np.bincount(client_of_unit, weights=rows_per_unit, minlength=n_clients)
        if sizes.min() >= min_rows:
            return client_of_unit[unit]
    raise DataError(
        f"--partition {spec}: no draw in {MAX_DRAWS} gave each of {n_clients} clients {min_rows} rows; "
        "raise ALPHA or use fewer clients"
    )


def _by_site(unit: np.ndarray, sites: np.ndarray | None, n_clients: int, column: str) -> np.ndarray:
    if sites is None:
        raise DataError(f"--partition column:{column}: the data has no column '{column}' (give a CSV manifest)")
    values = np.asarray(sites).astype(str)
    if np.any((values == "") | (values == "nan") | (values == "None")):
        raise DataError(f"--partition column:{column}: {int(np.sum(values == ''))} rows have no site")
    names, client = np.unique(values, return_inverse=True)
    per_unit = np.full(int(unit.max()) + 1, -1)
    per_unit[unit] = client
    if np.any(per_unit[unit] != client):
        bad = int(unit[np.flatnonzero(per_unit[unit] != client)[0]])
        raise DataError(f"--partition column:{column}: a patient (group {bad}) appears at two sites")
    if n_clients and n_clients != len(names):
        raise ConfigError(
            f"--clients {n_clients}: column '{column}' names {len(names)} sites ({', '.join(names[:8])}); "
            "give that number or leave --clients out"
        )
    return client.astype(np.int64)


def site_names(sites: np.ndarray) -> list[str]:
    """The site of each client index that :func:`assign_clients` gives for ``column`` partitions."""
    return [str(s) for s in np.unique(np.asarray(sites).astype(str))]


# ------------------------------------------------------------------------------------------------ shift


def shift_params(client: int, seed: int) -> dict[str, float]:
    """The fixed intensity transform of client ``client``: ``{"gamma", "gain", "offset"}``.

    Client 0 keeps the images unchanged; others get a gamma in [0.5, 2], a gain in [0.7, 1.1] and an
    offset in [-20, 30] grey levels, drawn from ``(seed, client)``.
    """
    if client == 0:
        return {"gamma": 1.0, "gain": 1.0, "offset": 0.0}
    rng = np.random.default_rng([seed, client])
    return {
        "gamma": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        "gain": float(rng.uniform(0.7, 1.1)),
        "offset": float(rng.uniform(-20, 30)),
    }


def apply_shift(images: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    """``uint8`` images ``(N, C, ...)`` through ``255 * (x/255)^gamma * gain + offset``, clipped; same shape."""
    x = images.float() / 255
    y = 255 * x.pow(params["gamma"]) * params["gain"] + params["offset"]
    return y.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------- client datasets


def all_rows(dataset: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[tuple[str, int]]]:
    """Labels, patient IDs and (with one ``tabular`` column) sites of the rows of all splits, in split order.

    Returns:
        ``(labels, groups, sites, spans)``; ``spans`` lists ``(split, length)`` in the order concatenated.
    """
    labels, groups, sites, spans = [], [], [], []
    have_groups = any(s.patient_ids is not None for s in dataset.splits.values())
    for name, split in dataset.splits.items():
        labels.append(split.labels)
        spans.append((name, len(split)))
        if have_groups:
            pid = split.patient_ids if split.patient_ids is not None else np.full(len(split), "", dtype=object)
            groups.append(np.asarray([f"{p}" for p in pid], dtype=object))
        if split.tabular is not None and split.tabular.columns:
            sites.append(next(iter(split.tabular.columns.values())))
    return (
        np.concatenate(labels),
        np.concatenate(groups) if have_groups else None,
        np.concatenate(sites) if len(sites) == len(spans) else None,
        spans,
    )


def client_dataset(dataset: Any, assignment: np.ndarray, client: int, *, shift: dict[str, float] | None = None) -> Any:
    """Client ``client``'s share of ``dataset`` (its rows of each split), with its intensity ``shift`` if any.

    Args:
        dataset: A :class:`medclass.data.dataset.Dataset`.
        assignment: ``(N,)`` client of each row of all splits in the dataset's split order (:func:`assign_clients`).
        client: The client index.
        shift: :func:`shift_params` of the client, or ``None``.
    """
    splits, start = {}, 0
    for name, split in dataset.splits.items():
        mine = np.flatnonzero(assignment[start : start + len(split)] == client)
        start += len(split)
        part = split.subset(mine)
        if part.tabular is not None:
            part = replace(part, tabular=None)  # the site column served the partition; it is not a model input
        if shift is not None:
            part = replace(part, images=apply_shift(part.images, shift))
        splits[name] = part
    return replace(dataset, splits=splits, extra=dict(dataset.extra), name=dataset.name)
