"""``medclass index``: one manifest row per image file under a folder, readable or not.

Each row says whether the file decodes (and why not), what the DICOM header says about it
(modality, body part, view, study and series) and its size. The patient is written only as a
salted hash: the raw ID or name never leaves memory, so a manifest can be shared and still be
split by patient. The output is a manifest that ``medclass split`` and ``medclass train`` read.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medclass.data.dataset import SPLITS
from medclass.errors import DataError, MedclassError
from medclass.utils.files import atomic_path
from medclass.utils.progress import show_progress

log = logging.getLogger(__name__)

INDEX_COLUMNS = (
    "path",
    "readable",
    "error",
    "format",
    "modality",
    "body_part",
    "view_position",
    "study_uid",
    "series_uid",
    "patient_id",
    "rows",
    "columns",
    "frames",
    "label",
)
SALT_ENV = "MEDCLASS_SALT"
_SKIP_SUFFIXES = frozenset({".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".html", ".xml", ".py", ".log"})


def patient_hash(patient_id: str, salt: bytes) -> str:
    """Salted, keyed hash of a patient identifier: 16 hex digits, stable for one salt.

    Args:
        patient_id: The raw identifier (never stored).
        salt: Secret bytes; the same salt gives the same hash for the same patient.

    Returns:
        ``""`` for an empty identifier, else the first 16 hex digits of HMAC-SHA-256.
    """
    pid = patient_id.strip()
    if not pid:
        return ""
    return hmac.new(salt, pid.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def resolve_salt(salt: str | None) -> tuple[bytes, bool]:
    """The salt to use: the argument, else ``$MEDCLASS_SALT``, else a fresh random one.

    Returns:
        ``(salt, given)``; ``given`` is False for a random salt, whose hashes match only within one run.
    """
    value = salt or os.environ.get(SALT_ENV)
    if value:
        return value.encode("utf-8"), True
    return secrets.token_bytes(16), False


def _candidates(root: Path) -> Iterator[Path]:
    """Files under ``root`` that may be images: not hidden, not known text/config files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() not in _SKIP_SUFFIXES:
                yield path


def _label(path: Path, root: Path) -> str:
    """The class folder: the first folder below ``root`` (or below a train/val/test folder), as in training."""
    folders = list(path.relative_to(root).parts[:-1])
    if folders and folders[0].lower() in SPLITS:
        folders = folders[1:]
    return folders[0] if folders else ""


def _index_one(path: Path, *, decode: bool, max_pixels: int | None) -> dict[str, Any] | None:
    """Read one file; ``None`` when it is not an image at all, else a row (``patient_raw`` still raw)."""
    from medclass.io import detect_format, read, to_uint8_image

    suffix_known = path.suffix.lower() in (".dcm", ".dicom", ".nii", ".gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
    try:
        fmt = detect_format(path)
    except OSError as err:
        return {"readable": False, "error": f"cannot open ({err.strerror or err})", "format": ""}
    if fmt is None and not suffix_known and path.suffix.lower() not in (".bmp", ".npy"):
        return None
    row: dict[str, Any] = {"format": fmt or "", "readable": False, "error": ""}
    try:
        data = read(path, header_only=not decode, max_pixels=max_pixels)
        if decode:
            to_uint8_image(data)  # the whole path training takes, so "readable" means trainable
    except MedclassError as err:
        row["error"] = str(err).removeprefix(f"{path}: ")
        return row
    meta = data.meta
    row.update(
        readable=True,
        format=meta.get("format", fmt or ""),
        modality=meta.get("modality") or "",
        body_part=meta.get("body_part") or "",
        view_position=meta.get("view_position") or "",
        study_uid=meta.get("study_uid") or "",
        series_uid=meta.get("series_uid") or "",
        rows=meta.get("rows") or "",
        columns=meta.get("columns") or "",
        frames=meta.get("frames") or 1,
        patient_raw=str(meta.get("patient_id") or ""),
    )
    return row


def index_folder(
    root: str | Path,
    out: str | Path,
    *,
    salt: str | None = None,
    patient_pattern: str | None = None,
    decode: bool = True,
    max_pixels: int | None = None,
    workers: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a manifest with one row per image file under ``root``.

    Args:
        root: Folder to walk (recursively; hidden files and text/config files are skipped).
        out: Output CSV (written atomically). Paths in it are relative to its folder.
        salt: Secret for the patient hash (else ``$MEDCLASS_SALT``, else random for this run).
        patient_pattern: Regular expression applied to the path relative to ``root`` for files
            without a DICOM PatientID; its first group (or whole match) is the patient.
        decode: Decode the pixels, so ``readable`` means the image can be trained on; ``False``
            reads headers only (fast, for DICOM).
        max_pixels: Pixel limit per image (decompression bombs).
        workers: Reader threads.
        progress: Show a progress bar (on a terminal only).

    Returns:
        Summary: ``rows``, ``readable``, ``unreadable``, ``patients``, ``salt_given``, ``out``.

    Raises:
        DataError: ``root`` is not a folder, or the pattern is not a valid regular expression.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    try:
        pattern = re.compile(patient_pattern) if patient_pattern else None
    except re.error as err:
        raise DataError(f"--patient-pattern {patient_pattern!r}: invalid regular expression ({err})") from None
    key, salt_given = resolve_salt(salt)
    files = list(_candidates(root))
    base = out.resolve().parent
    log.info("indexing %d files under %s", len(files), root)

    def work(path: Path) -> dict[str, Any] | None:
        return _index_one(path, decode=decode, max_pixels=max_pixels)

    counts = {"rows": 0, "readable": 0, "unreadable": 0}
    patients: set[str] = set()
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
        ThreadPoolExecutor(workers) as pool,
    ):
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        results = pool.map(work, files)
        if show_progress(progress):
            results = tqdm(results, total=len(files), desc="indexing", unit="file")
        for path, row in zip(files, results, strict=True):
            if row is None:
                continue
            raw = row.pop("patient_raw", "")
            if not raw and pattern is not None:
                m = pattern.search(str(path.relative_to(root)))
                raw = (m.group(1) if m.groups() else m.group(0)) if m else ""
            row["patient_id"] = patient_hash(raw, key)
            row["path"] = os.path.relpath(path.resolve(), base)
            row["label"] = _label(path, root)
            row["readable"] = "true" if row["readable"] else "false"
            writer.writerow(row)
            counts["rows"] += 1
            counts["readable" if row["readable"] == "true" else "unreadable"] += 1
            if row["patient_id"]:
                patients.add(row["patient_id"])
    return {**counts, "patients": len(patients), "salt_given": salt_given, "out": str(out)}
