"""File tables: the list of image files a folder or CSV manifest names, with labels, splits and patients.

A :class:`FileTable` is what a folder of class subfolders or a manifest *says*, before any pixel is
read. :mod:`medclass.data.sources` decodes it into a dataset; :mod:`medclass.data.audit` checks it
for leakage. Both therefore see the same rows.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclass.data.dataset import SPLITS
from medclass.data.index import INDEX_COLUMNS
from medclass.data.tabular import TabularTable
from medclass.errors import DataError, MedclassError
from medclass.io.images import is_image_file

#: Manifest columns that are never labels. ``medclass index`` writes the metadata ones.
RESERVED_COLUMNS = frozenset({"path", "patient_id", "split"})
METADATA_COLUMNS = (frozenset(INDEX_COLUMNS) - RESERVED_COLUMNS - {"label"}) | {
    "channels",
    "sha256",
    "bytes",
    "subtype",
    "label_index",
}
_UNKNOWN = ("", "nan", "na", "?", "unknown", "-1")


@dataclass
class FileTable:
    """Image files with their labels and, when known, split and patient.

    Attributes:
        paths: ``N`` image files.
        labels: ``float32`` ``(N,)`` class indices or ``(N, L)`` 0/1 values; NaN = unknown.
        label_names: Class names (or label names for multi-label), or ``None`` when the labels
            are bare indices.
        task: ``"multilabel"`` when the source says so, else ``None`` (inferred later).
        splits: ``(N,)`` split names (``train``/``val``/``test``), or ``None`` when the source has none.
        patient_ids: ``(N,)`` patient identifiers as strings, or ``None``.
        source: The folder or manifest, for messages.
        tabular: The manifest's clinical columns asked for (``read_manifest(tabular=...)``), raw, with each
            row's line number in the file; ``None`` when none were asked for.
        label_columns: The manifest columns the labels came from (empty for folders).
        cases: ``(N,)`` case identifiers (``read_manifest(group_by=...)``): the images of one case get one
            prediction. ``None`` when none were asked for.
    """

    paths: list[Path]
    labels: np.ndarray
    label_names: list[str] | None
    task: str | None
    splits: np.ndarray | None
    patient_ids: np.ndarray | None
    source: str
    tabular: TabularTable | None = None
    label_columns: tuple[str, ...] = ()
    cases: np.ndarray | None = None

    def split_rows(self) -> dict[str, list[int]] | None:
        """Row indices per split, or ``None`` when the source has no split column or folders."""
        if self.splits is None:
            return None
        return {s: np.flatnonzero(self.splits == s).tolist() for s in SPLITS}


def scan_folder(path: str | Path) -> FileTable:
    """List ``ROOT/<class>/*`` images, optionally under ``ROOT/{train,val,test}/<class>/``.

    Any file medclass can read counts (PNG, JPEG, TIFF, DICOM with or without suffix, NIfTI, ``.npy``);
    files in nested folders below a class folder belong to that class.

    Raises:
        DataError: No images, or fewer than two classes.
    """
    root = Path(path)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in subdirs if p.name.lower() in SPLITS]
    entries: list[tuple[Path, str, str | None]] = []
    if split_dirs:
        for sd in split_dirs:
            for cd in sorted(p for p in sd.iterdir() if p.is_dir() and not p.name.startswith(".")):
                entries += [(f, cd.name, sd.name.lower()) for f in _images_under(cd)]
    else:
        for cd in subdirs:
            entries += [(f, cd.name, None) for f in _images_under(cd)]
    if not entries:
        raise DataError(f"{root}: no images found in class subfolders (expected ROOT/<class>/*.png|jpg|dcm)")
    class_names = sorted({c for _, c, _ in entries})
    if len(class_names) < 2:
        raise DataError(f"{root}: found only one class folder '{class_names[0]}'; need at least two")
    labels = np.array([class_names.index(c) for _, c, _ in entries], dtype=np.float32)
    splits = np.array([s for _, _, s in entries], dtype=object) if split_dirs else None
    paths = [e[0] for e in entries]
    return FileTable(paths, labels, class_names, None, splits, dicom_patients(paths), str(root))


def dicom_patients(paths: list[Path]) -> np.ndarray | None:
    """Patient groups from DICOM headers, so a folder of DICOM files is split by patient.

    A patient's group is named after the first file that has that PatientID (``"patient:17"``):
    deterministic, so the same seed gives the same split, and free of the raw identifier, which
    is dropped at once.

    Returns:
        ``(N,)`` group strings (a file without PatientID, or not DICOM, is its own group), or
        ``None`` when no file is DICOM with a PatientID.
    """
    from medclass.io import detect_format, read

    first: dict[str, int] = {}
    groups = []
    for i, path in enumerate(paths):
        pid = ""
        try:
            if detect_format(path) == "dicom":
                pid = str(read(path, header_only=True).meta.get("patient_id") or "").strip()
        except (OSError, MedclassError):
            pid = ""  # unreadable files fail later, when decoded, with their own message
        groups.append(f"patient:{first.setdefault(pid, i)}" if pid else f"file:{i}")
    return np.array(groups, dtype=object) if first else None


def _images_under(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and not f.name.startswith(".") and is_image_file(f)]


def _parse_label(value: str) -> float | str:
    value = value.strip()
    if value.lower() in _UNKNOWN:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return value


def read_manifest(
    path: str | Path,
    label_column: str | None = None,
    group_column: str | None = None,
    tabular: list[str] | tuple[str, ...] | None = None,
    group_by: str | None = None,
) -> FileTable:
    """Read a CSV manifest: ``path`` plus a ``label`` column or several 0/1 label columns.

    Optional columns: ``patient_id`` (or ``group_id``), ``split`` (train/val/test) and ``readable``
    (rows whose value is ``false`` are left out, as ``medclass index`` writes them for unreadable
    files). With a ``label`` column, the other columns are metadata; without one, every column that
    is neither reserved nor known metadata is a label (multi-label when there are several). Relative
    paths resolve against the manifest's folder; label cells may be class names or indices; empty
    cells are unknown.

    Args:
        path: The CSV file.
        label_column: The column that holds the label (default: ``label``, else the 0/1 columns).
        group_column: The column whose rows belong together (one patient, one lesion) and are kept
            in one split (default: ``patient_id``, else ``group_id`` when present, else none).
        tabular: Clinical columns to keep per row, raw (:attr:`FileTable.tabular`); encoded later, by a
            schema fitted on the training split (:mod:`medclass.data.tabular`).
        group_by: The column naming each image's case (:attr:`FileTable.cases`). Unless ``group_column`` is
            given it is also the split's group column, so that a case never straddles two splits.

    Raises:
        DataError: Unreadable CSV, no ``path`` or label column, an unknown ``label_column``,
            ``group_column`` or ``tabular`` column, a label column used as a clinical one, no rows, bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            records, lines = [], []  # lines: each data row's line number in the file, for messages
            for r in reader:
                records.append({(k or "").strip(): (v or "") for k, v in r.items()})
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if "path" not in header:
        raise DataError(f"{path}: manifest needs a 'path' column (found: {', '.join(header)})")
    if group_by is not None and group_column is None:
        group_column = group_by
    for option, column in (("label_column", label_column), ("group_column", group_column), ("group_by", group_by)):
        if column is not None and (column not in header or column in ("path", "split")):
            raise DataError(f"{path}: {option} '{column}' is not a usable column (columns: {', '.join(header)})")
    if missing := [repr(c) for c in tabular or () if c not in header]:
        names = ", ".join(missing)
        raise DataError(f"{path}: --tabular column(s) {names} not in the manifest (columns: {', '.join(header)})")
    if reserved := [c for c in tabular or () if c in ("path", "split")]:
        raise DataError(f"{path}: --tabular column(s) {', '.join(reserved)} cannot be clinical fields")
    if "readable" in header:
        kept = [i for i, r in enumerate(records) if r["readable"].strip().lower() not in ("false", "0", "no")]
        records, lines = [records[i] for i in kept], [lines[i] for i in kept]
    if label_column is not None:
        label_cols = [label_column]
    elif "label" in header:
        label_cols = ["label"]
    else:
        skip = RESERVED_COLUMNS | METADATA_COLUMNS | {"group_id", group_column, group_by, *(tabular or ())}
        label_cols = [h for h in header if h not in skip]
    if not label_cols:
        raise DataError(f"{path}: manifest needs a 'label' column or 0/1 label columns besides path/patient_id/split")
    if leaked := [c for c in tabular or () if c in label_cols]:
        raise DataError(f"{path}: --tabular column(s) {', '.join(leaked)} hold the label; a model must not see them")
    if not records:
        raise DataError(f"{path}: manifest has no (readable) rows")
    base = path.parent
    files = [Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"] for r in records]
    label_names: list[str] | None
    if len(label_cols) == 1:
        raw = [_parse_label(r[label_cols[0]]) for r in records]
        if any(isinstance(v, str) for v in raw):
            label_names = sorted({v for v in raw if isinstance(v, str)})
            labels = np.array([label_names.index(v) if isinstance(v, str) else math.nan for v in raw], np.float32)
        else:
            labels, label_names = np.array(raw, dtype=np.float32), None
        task = None
    else:
        labels = np.empty((len(records), len(label_cols)), dtype=np.float32)
        for i, r in enumerate(records):
            for j, c in enumerate(label_cols):
                v = _parse_label(r[c])
                if isinstance(v, str) or (not math.isnan(v) and v not in (0.0, 1.0)):
                    raise DataError(f"{path}: row {i + 2}, column '{c}': multi-label values must be 0, 1 or empty")
                labels[i, j] = v
        label_names, task = label_cols, "multilabel"
    if group_column is None:
        group_column = next((c for c in ("patient_id", "group_id") if c in header), None)
    groups = None if group_column is None else np.array([r[group_column] for r in records], dtype=object)
    splits = None
    if "split" in header:
        splits = np.array([r["split"].strip().lower() for r in records], dtype=object)
        bad = sorted({v for v in splits if v not in SPLITS})
        if bad:
            raise DataError(f"{path}: unknown split value(s) {bad}; use train/val/test")
    table = None
    if tabular:
        columns = {c: np.array([r[c] for r in records], dtype=object) for c in tabular}
        table = TabularTable(columns, np.asarray(lines, dtype=np.int64), str(path))
    cases = None
    if group_by is not None:
        cases = np.array([r[group_by] for r in records], dtype=object)
        if blank := [lines[i] for i, c in enumerate(cases) if not c.strip()]:
            raise DataError(f"{path}: row {blank[0]}, column '{group_by}': empty case identifier (--group-by)")
    return FileTable(files, labels, label_names, task, splits, groups, str(path), table, tuple(label_cols), cases)
