"""Clinical fields beside the images: the raw table a manifest gives, and the encoding fitted on training rows.

A manifest's ``--tabular`` columns (age, sex, body site ...) travel with the rows as a :class:`TabularTable` of
raw strings, aligned with the images of each split. :func:`fit_schema` decides each column's kind from the
*training* rows only and learns its encoding:

* **numeric** (every non-missing training value reads as a finite number): standardised with the training
  mean and standard deviation (a constant column divides by 1);
* **categorical** (anything else): one-hot over the categories seen in training; a category first seen at
  validation, test or prediction time is all zeros, an "other" that no training row had;
* every column also gets a **missing indicator**: an empty cell (or ``nan``, ``na``, ``n/a``, ``null``,
  ``?``, ``unknown``; ``None`` or NaN in Python) encodes as value(s) 0 and indicator 1.

:meth:`TabularSchema.transform` turns rows into ``float32`` ``(N, T)``; :meth:`TabularSchema.to_json` is stored in
a checkpoint's ``model.json`` under ``preprocessing.tabular``, so evaluation and prediction encode exactly as
training did. The encoders are pure functions of the stored numbers; the classes only hold them.

Example (``age`` numeric, ``sex`` categorical; columns ``age, age:missing, sex=f, sex=m, sex:missing``)::

    schema = fit_schema(TabularTable({"age": ages, "sex": sexes}))
    x = schema.transform([{"age": 40, "sex": "f"}, {"sex": "x"}])  # (2, 5): [[z, 0, 1, 0, 0], [0, 1, 0, 0, 0]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medclass.errors import DataError

#: Cell texts read as "missing" (compared after stripping, ignoring case).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "?", "unknown"})
SCHEMA_VERSION = 1


@dataclass
class TabularTable:
    """Raw clinical fields of ``N`` rows, aligned with a split's images.

    Attributes:
        columns: Column name -> ``(N,)`` object array of raw cell values (strings as read, or Python values).
        rows: ``(N,)`` the line number of each row in ``source`` (for messages), or ``None`` (rows 1..N).
        source: The file the rows came from, for messages.
    """

    columns: dict[str, np.ndarray]
    rows: np.ndarray | None = None
    source: str = "tabular"

    def __len__(self) -> int:
        if self.columns:
            return len(next(iter(self.columns.values())))
        return 0 if self.rows is None else len(self.rows)

    def subset(self, index: Any) -> TabularTable:
        """Rows ``index`` (indices or a boolean mask), as a new table."""
        index = np.asarray(index)
        rows = None if self.rows is None else self.rows[index]
        return TabularTable({k: v[index] for k, v in self.columns.items()}, rows, self.source)

    def row_number(self, i: int) -> int:
        """The line number of row ``i`` in the source (``i + 1`` when the rows carry none)."""
        return int(self.rows[i]) if self.rows is not None else i + 1


def is_missing(value: Any) -> bool:
    """Whether a cell counts as missing: ``None``, NaN, or one of :data:`MISSING_TOKENS` as text."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    return False


def read_number(value: Any) -> float | None:
    """A cell as a finite float, or ``None`` when it does not read as one (missing cells are the caller's)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def category_of(value: Any) -> str:
    """A non-missing cell as the category text it is compared by (stripped; ``3.0`` and ``"3.0"`` agree)."""
    return value.strip() if isinstance(value, str) else str(value)


@dataclass
class ColumnCode:
    """How one column is encoded.

    Attributes:
        name: Column name.
        kind: ``numeric`` or ``categorical``.
        mean: Training mean (numeric).
        std: Training standard deviation, 1 when it is 0 (numeric).
        categories: Categories seen in training, sorted (categorical).
    """

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Encoded columns: the value (numeric) or one per category, plus the missing indicator."""
        return (1 if self.kind == "numeric" else len(self.categories)) + 1

    def feature_names(self) -> list[str]:
        head = [self.name] if self.kind == "numeric" else [f"{self.name}={c}" for c in self.categories]
        return [*head, f"{self.name}:missing"]


def fit_column(name: str, values: Sequence[Any], *, source: str = "tabular") -> ColumnCode:
    """Fit one column's encoding on its training values.

    Raises:
        DataError: Every training value is missing (the column carries nothing to learn from).
    """
    present = [v for v in values if not is_missing(v)]
    if not present:
        raise DataError(f"{source}: column '{name}' is empty in every training row; leave it out of --tabular")
    numbers = [read_number(v) for v in present]
    if all(n is not None for n in numbers):
        arr = np.asarray(numbers, dtype=np.float64)
        std = float(arr.std())
        return ColumnCode(name, "numeric", mean=float(arr.mean()), std=std if std > 0 else 1.0)
    return ColumnCode(name, "categorical", categories=sorted({category_of(v) for v in present}))


def encode_column(code: ColumnCode, values: Sequence[Any], rows: Any, *, source: str) -> np.ndarray:
    """``float64`` ``(N, code.width)`` encoding of one column's cells (see the module docstring).

    Args:
        code: The fitted encoding.
        values: ``N`` cells.
        rows: Callable ``i -> line number`` for messages.
        source: The file, for messages.

    Raises:
        DataError: A numeric column's cell is neither missing nor a number, naming file, row and column.
    """
    out = np.zeros((len(values), code.width), dtype=np.float64)
    index = {c: j for j, c in enumerate(code.categories)}
    for i, value in enumerate(values):
        if is_missing(value):
            out[i, -1] = 1.0
        elif code.kind == "numeric":
            number = read_number(value)
            if number is None:
                raise DataError(
                    f"{source}: row {rows(i)}, column '{code.name}': cannot read {value!r} as a number "
                    f"(the column is numeric in the training rows)"
                )
            out[i, 0] = (number - code.mean) / code.std
        elif (j := index.get(category_of(value))) is not None:
            out[i, j] = 1.0  # an unseen category stays all zeros: "other"
    return out


class TabularSchema:
    """The fitted encoding of a run's clinical columns (see the module docstring).

    Args:
        columns: One :class:`ColumnCode` per column, in the order given to training.
    """

    def __init__(self, columns: list[ColumnCode]) -> None:
        self.columns = list(columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """``T``, the encoded vector's length."""
        return sum(c.width for c in self.columns)

    def feature_names(self) -> list[str]:
        """The ``T`` encoded columns' names: ``age``, ``age:missing``, ``sex=female``, ..."""
        return [n for c in self.columns for n in c.feature_names()]

    def missing_vector(self) -> np.ndarray:
        """``float32`` ``(T,)``: the encoding of a row with every field missing (values 0, indicators 1)."""
        out = np.zeros(self.width, dtype=np.float32)
        ends = np.cumsum([c.width for c in self.columns])
        out[ends - 1] = 1.0
        return out

    def transform(self, rows: Any, n: int | None = None) -> np.ndarray:
        """Encode rows as ``float32`` ``(N, T)``.

        Args:
            rows: A :class:`TabularTable`, a list of ``N`` dicts (field -> value; absent fields are missing), a
                mapping field -> ``N`` values, or ``None`` (every field missing; needs ``n``). Fields the schema
                does not know are refused, except in a :class:`TabularTable` (a manifest may hold more columns).
            n: Number of rows, for ``rows=None`` (and checked against the others when given).

        Raises:
            DataError: An unreadable value (file, row and column named), unknown fields, or a row count that
                does not match ``n``.
        """
        table = as_table(rows, self.names, n=n)
        size = len(table)
        parts = []
        for code in self.columns:
            values = table.columns.get(code.name)
            if values is None:
                values = np.full(size, None, dtype=object)
            parts.append(encode_column(code, values, table.row_number, source=table.source))
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((size, 0), np.float32)

    def to_json(self) -> dict[str, Any]:
        """The schema as JSON-able data (``model.json``'s ``preprocessing.tabular``)."""
        cols = []
        for c in self.columns:
            entry: dict[str, Any] = {"name": c.name, "kind": c.kind}
            entry.update({"mean": c.mean, "std": c.std} if c.kind == "numeric" else {"categories": list(c.categories)})
            cols.append(entry)
        return {"version": SCHEMA_VERSION, "columns": cols}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TabularSchema:
        """Inverse of :meth:`to_json`."""
        try:
            cols = [
                ColumnCode(
                    str(c["name"]),
                    str(c["kind"]),
                    mean=float(c.get("mean", 0.0)),
                    std=float(c.get("std", 1.0)),
                    categories=[str(v) for v in c.get("categories", [])],
                )
                for c in data["columns"]
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"preprocessing.tabular: not a tabular schema ({err})") from None
        if any(c.kind not in ("numeric", "categorical") for c in cols):
            raise DataError("preprocessing.tabular: column kinds must be numeric or categorical")
        return cls(cols)


def fit_schema(table: TabularTable, columns: Sequence[str] | None = None) -> TabularSchema:
    """Fit the encoding of ``columns`` (default: all of ``table``'s, in order) on training rows ``table``."""
    names = list(table.columns) if columns is None else list(columns)
    return TabularSchema([fit_column(c, table.columns[c], source=table.source) for c in names])


def as_table(rows: Any, known: Sequence[str], n: int | None = None) -> TabularTable:
    """Normalise the row forms :meth:`TabularSchema.transform` takes into a :class:`TabularTable`.

    Raises:
        DataError: Fields outside ``known`` (except in a TabularTable), ragged lengths, or a count other than ``n``.
    """
    if rows is None:
        if n is None:
            raise DataError("tabular: give the number of rows when no fields are given")
        return TabularTable({}, np.arange(1, n + 1), "tabular")
    if isinstance(rows, TabularTable):
        table = rows
    elif isinstance(rows, Mapping):
        if not rows:
            return as_table(None, known, n)
        _check_fields(rows.keys(), known)
        lengths = {k: len(v) for k, v in rows.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"tabular: fields have different lengths ({lengths})")
        table = TabularTable({k: _objects(v) for k, v in rows.items()}, None, "tabular")
    elif isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        if not all(isinstance(r, Mapping) for r in rows):
            raise DataError("tabular: expected a list of dicts (one per image) or a mapping field -> values")
        _check_fields({k for r in rows for k in r}, known)
        fields = [k for k in known if any(k in r for r in rows)]
        columns = {k: _objects([r.get(k) for r in rows]) for k in fields}
        table = TabularTable(columns, np.arange(1, len(rows) + 1), "tabular")  # rows keep the count without fields
    else:
        raise DataError(f"tabular: expected a list of dicts or a mapping field -> values, got {type(rows).__name__}")
    if n is not None and len(table) != n:
        raise DataError(f"tabular: {len(table)} rows of clinical fields for {n} images")
    return table


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _check_fields(given: Any, known: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DataError(f"tabular: unknown field(s) {', '.join(unknown)} (the model takes: {', '.join(known)})")


def read_clinical_csv(path: Any) -> dict[str, dict[str, str]]:
    """Clinical fields per image file from a CSV (``medclass predict --clinical``): file name -> fields.

    The CSV has a ``path`` or ``file`` column matched to the inputs by file name (its last path component); every
    other column is a field (the model uses those its schema names; empty cells are missing).

    Raises:
        DataError: An unreadable CSV, no ``path``/``file`` column, or a file name on two rows, naming file and row.
    """
    import csv
    from pathlib import Path, PureWindowsPath

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            key = next((k for k in ("path", "file") if k in header), None)
            if key is None:
                raise DataError(
                    f"{path}: needs a 'path' or 'file' column naming the images (found: {', '.join(header)})"
                )
            out: dict[str, dict[str, str]] = {}
            for r in reader:
                row = {(k or "").strip(): (v or "") for k, v in r.items()}
                name = PureWindowsPath(row.pop(key).strip()).name  # the last component, whichever separator
                if name in out:
                    raise DataError(f"{path}: row {reader.line_num}: '{name}' is named on an earlier row too")
                out[name] = row
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    return out
