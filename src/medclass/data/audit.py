"""Data audit: duplicates and patients that leak across splits, and a census of a dataset.

:func:`audit` reads every image of a folder, CSV manifest, ``.npz`` file or catalog dataset once and
reports exact duplicates (identical decoded pixels; for files also byte-identical copies, which
``medclass train`` keeps once), near duplicates (close perceptual hashes, :mod:`medclass.data.phash`,
confirmed by thumbnail correlation), patients in more than one split (counted, never named), class
balance, sizes, modes, intensities and unreadable files. A source without splits is audited as one
split named ``all``, plus the seeded split that ``medclass train`` would make of it.

Leakage rule (:attr:`AuditReport.leakage_found`): with given splits, any exact or near duplicate
across two splits, or any patient in two splits; without splits, any exact duplicate whose copies
carry different labels.

Manifests also get every other column checked as a predictor of the label on its own
(:mod:`medclass.data.column_leaks`): a column that leaks the label, settles a class or copies the label is
listed under :attr:`AuditReport.columns` and named in :attr:`AuditReport.column_warnings`. Such a column
is harmless in the manifest and fatal as a model input (``--tabular``), so it does not count as split
leakage.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data.column_leaks import ColumnLeak
from medclass.data.dataset import SPLITS

ALL = "all"
_EXAMPLES = 3
_BATCH = 64  # files per thread task
_LEVELS = np.arange(256, dtype=np.float64)
_BLANK_STD = 1.0  # an image whose pixel std is below this is (nearly) blank


@dataclass
class ExactDuplicates:
    """Groups of images with identical decoded pixels in one scope: a split, or ``"across"`` splits.

    ``images`` counts group members inside the scope; ``label_conflicts`` and ``patient_conflicts``
    count groups whose images carry more than one label or patient ID; ``examples`` name a few groups.
    """

    scope: str
    groups: int = 0
    images: int = 0
    label_conflicts: int = 0
    patient_conflicts: int = 0
    examples: list[list[str]] = field(default_factory=list)


@dataclass
class NearDuplicates:
    """Near-duplicate pairs in one scope: a split, a pair of splits (``"train/test"``) or ``"across"``.

    ``images`` counts distinct images in the pairs, ``label_conflicts`` pairs with different labels;
    ``examples`` are a few ``[name, name, hash distance]``.
    """

    scope: str
    pairs: int = 0
    images: int = 0
    label_conflicts: int = 0
    examples: list[list[Any]] = field(default_factory=list)


@dataclass
class SplitCensus:
    """One split's readable images: count, images per class and intensities (0..255).

    ``classes`` counts positives per label for multi-label data and NaN labels as ``"unknown"``;
    ``mean``/``std`` average the per-image mean and standard deviation, ``mean_min``/``mean_max``
    bound the per-image means; ``blank`` counts (nearly) constant images.
    """

    split: str
    images: int
    classes: dict[str, int]
    mean: float | None = None
    std: float | None = None
    mean_min: float | None = None
    mean_max: float | None = None
    blank: int = 0


@dataclass
class PatientOverlap:
    """Distinct patients, those with images in two or more splits (``shared``), their images, and
    shared patients per pair of splits (``{"train/test": 12}``). Never the IDs themselves."""

    patients: int
    shared: int
    images: int
    by_pair: dict[str, int]


@dataclass
class TrainingSplit:
    """What ``medclass train`` makes of a source without splits: byte-identical files dropped, then a
    seeded split; with the pixel-identical groups and near-duplicate pairs left across its splits."""

    seed: int
    val: float
    test: float
    duplicates_dropped: int
    splits: list[SplitCensus]
    exact: ExactDuplicates
    near: list[NearDuplicates]


@dataclass
class AuditReport:
    """Everything :func:`audit` found; see the module docstring for the leakage rule.

    Attributes:
        source: The spec audited.
        kind: ``folder``, ``manifest`` or ``npz``.
        task: ``multilabel`` or ``classes`` (one label per image).
        label_names: Class (or label) names.
        images: Images listed by the source.
        splits_given: Whether the source assigns splits.
        near_distance: Largest pHash distance of a near duplicate.
        min_correlation: Smallest thumbnail correlation of a near duplicate.
        near_rejected: Hash matches (not pixel-identical) that the thumbnail correlation rejected.
        splits: Census per split.
        exact: Exact-duplicate groups per split, then ``across``.
        near: Near-duplicate pairs per split, per pair of splits, then ``across``.
        byte_identical: For files: ``groups``, ``files`` and ``dropped_by_training`` (copies that
            training drops; with given splits it keeps the copy in train).
        patients: Patient overlap, when the source has patient IDs.
        sizes: Most common native sizes as ``[size, count]`` (``"HxW"``).
        modes: Decoded modes (``grey``/``RGB``) with counts.
        file_modes: Stored modes (PIL mode: ``L``, ``RGB``, ``I;16``...; ``other`` when PIL cannot tell).
        unreadable: ``[name, error]`` of files that could not be read.
        training: For sources without splits, the split training would make.
        leakage_found: See the module docstring; ``reasons`` says why, one line per finding.
        columns: For manifests, each column (not path, split, label or group) scored as a predictor of the
            label on its own (:mod:`medclass.data.column_leaks`); ``columns_split`` says on which rows.
        column_warnings: One line per column that leaks the label, settles a class or copies the label.
    """

    source: str
    kind: str
    task: str
    label_names: list[str]
    images: int
    splits_given: bool
    near_distance: int
    min_correlation: float
    near_rejected: int
    splits: list[SplitCensus]
    exact: list[ExactDuplicates]
    near: list[NearDuplicates]
    byte_identical: dict[str, int] | None
    patients: PatientOverlap | None
    sizes: list[list[Any]]
    modes: dict[str, int]
    file_modes: dict[str, int]
    unreadable: list[list[str]]
    training: TrainingSplit | None
    leakage_found: bool = False
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    columns: list[ColumnLeak] = field(default_factory=list)
    columns_split: str = ""
    column_warnings: list[str] = field(default_factory=list)


@dataclass
class _Images:
    """What was read from each of ``N`` images (internal): ``(N,)`` arrays unless noted.

    ``labels`` is ``(N,)`` or ``(N, L)``, ``thumbs`` ``(N, 32, 32)`` uint8, ``files`` the SHA-1 of each
    file's bytes (``None`` for arrays), ``errors`` ``[name, message]`` of unreadable files.
    """

    names: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    patients: np.ndarray | None
    readable: np.ndarray
    files: list[str | None] | None
    pixel: np.ndarray
    thumbs: np.ndarray
    phash: np.ndarray
    size: np.ndarray
    mode: np.ndarray
    file_mode: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    errors: list[list[str]]


# -------------------------------------------------------------------------------------------- reading


def _facts(a: np.ndarray, digest: str | None, file_mode: str) -> tuple[Any, ...]:
    """Per-image facts: file digest, pixel key, thumbnail, size, mode, stored mode, mean, std.

    ``a`` is ``uint8`` ``(H, W)``, ``(H, W, 3)`` or a grey volume ``(D, H, W)`` (its middle slice is hashed).
    The pixel key is the SHA-256 of shape and pixels: equal for equal pixels, whatever the file encoding.
    """
    from medclass.data.phash import thumbnail

    key = hashlib.sha256(str(a.shape).encode())
    key.update(np.ascontiguousarray(a).tobytes())
    volume = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] != 3)
    size = "x".join(map(str, a.shape[:3] if volume else a.shape[:2]))
    mode = "RGB" if a.shape[-1] == 3 and a.ndim == (4 if volume else 3) else "grey"
    thumb = thumbnail(a[a.shape[0] // 2] if volume else a)
    if a.dtype == np.uint8:  # exact mean and std from the histogram: several times faster than a.std()
        hist = np.bincount(a.reshape(-1), minlength=256)
        mean = float(hist @ _LEVELS) / max(a.size, 1)
        std = float(np.sqrt(max(float(hist @ _LEVELS**2) / max(a.size, 1) - mean**2, 0.0)))
    else:
        mean, std = float(a.mean()), float(a.std())
    return digest, key.hexdigest(), thumb, size, mode, file_mode, mean, std


def _read_file(path: Path) -> tuple[Any, ...] | str:
    """The facts of one file, or why it cannot be read."""
    from medclass.data.decode import file_digest
    from medclass.io.images import read_image

    try:
        digest = file_digest(path)
        a = read_image(path)
    except Exception as err:  # an audit lists every unreadable file and goes on, whatever the reader raised
        return str(err) or type(err).__name__
    try:
        from PIL import Image

        with Image.open(path) as img:  # reads the header only
            file_mode = img.mode
    except Exception:
        file_mode = "other"  # DICOM, NIfTI, .npy
    return _facts(a, digest, file_mode)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it (string work only, no file system calls)."""
    rel = os.path.relpath(path, root)
    return str(path) if rel.startswith("..") else Path(rel).as_posix()


def _mask_patients(texts: list[str], patients: np.ndarray) -> list[str]:
    """Replace each row's patient ID inside its text (file name, error) by a short hash, salted afresh per audit.

    File names often carry the patient ID (``person12_virus_3.jpeg``); a report shows names as examples.
    """
    salt = os.urandom(16)
    out = []
    for text, pid in zip(texts, patients.tolist()):
        pid = "" if pid is None else str(pid).strip()
        if pid:
            tag = "<patient " + hashlib.sha256(salt + pid.encode()).hexdigest()[:6] + ">"
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(pid)}(?![A-Za-z0-9])", tag, text)
        out.append(text)
    return out


def _build(names: list[str], labels: np.ndarray, splits: np.ndarray, patients: Any, results: list[Any]) -> _Images:
    """Collect per-image facts (or error strings) into :class:`_Images`."""
    from medclass.data.phash import HASH_SIZE, phash_stack

    ok = np.array([not isinstance(r, str) for r in results], dtype=bool)
    blank = (None, "", np.zeros((HASH_SIZE, HASH_SIZE), np.uint8), "", "", "", 0.0, 0.0)
    cols = list(zip(*[r if isinstance(r, tuple) else blank for r in results])) or [()] * 8
    thumbs = np.stack(cols[2]) if results else np.zeros((0, HASH_SIZE, HASH_SIZE), np.uint8)
    obj = lambda c: np.array(c, dtype=object)  # noqa: E731
    patients = None if patients is None or all(p is None for p in patients) else obj(patients)
    errors = [str(r) for r in results]
    if patients is not None:
        names, errors = _mask_patients(names, patients), _mask_patients(errors, patients)
    return _Images(
        names=obj(names),
        labels=labels,
        splits=obj([str(s) if s else "none" for s in splits]),
        patients=patients,
        readable=ok,
        files=None if all(d is None for d in cols[0]) else list(cols[0]),
        pixel=obj(cols[1]),
        thumbs=thumbs,
        phash=phash_stack(thumbs),
        size=obj(cols[3]),
        mode=obj(cols[4]),
        file_mode=obj(cols[5]),
        mean=np.array(cols[6], dtype=np.float64),
        std=np.array(cols[7], dtype=np.float64),
        errors=[[names[i], errors[i]] for i, r in enumerate(results) if isinstance(r, str)],
    )


def _read_table(
    spec: str, kind: str, progress: bool, columns: dict[str, str | None]
) -> tuple[_Images, list[str] | None, str | None]:
    """Read a folder or manifest (``columns``: its ``label_column`` and ``group_column``): every file decoded once,
    in threads."""
    from medclass.data.files import read_manifest, scan_folder

    table = read_manifest(spec, **columns) if kind == "manifest" else scan_folder(spec)
    root = Path(spec).parent if kind == "manifest" else Path(spec)
    # Batches of files per task: small images take less time to decode than threads take to hand over.
    batches = [table.paths[i : i + _BATCH] for i in range(0, len(table.paths), _BATCH)]
    results: list[Any] = []
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        from tqdm import tqdm

        from medclass.utils.progress import show_progress

        bar_off = not show_progress(progress)
        with tqdm(total=len(table.paths), desc="auditing", unit="img", leave=False, disable=bar_off) as bar:
            for batch in pool.map(lambda b: [_read_file(p) for p in b], batches):
                results += batch
                bar.update(len(batch))
    names = [_relative(p, root) for p in table.paths]
    splits = table.splits if table.splits is not None else [ALL] * len(names)
    return _build(names, table.labels, splits, table.patient_ids, results), table.label_names, table.task


def _read_arrays(spec: str) -> tuple[_Images, list[str], str | None]:
    """Read an ``.npz`` file or catalog dataset (its given splits)."""
    from medclass.data.sources import load_dataset

    ds = load_dataset(spec)
    names, labels, splits, patients, results = [], [], [], [], []
    for split_name, split in ds.splits.items():
        x = split.images.numpy()  # (N, C, H, W) or (N, C, D, H, W)
        x = x[:, 0] if x.shape[1] == 1 else np.moveaxis(x, 1, -1)  # grey (N, [D,] H, W) or RGB (N, H, W, 3)
        results += [_facts(a, None, "array") for a in x]
        names += [f"{split_name}[{i}]" for i in range(len(x))]
        splits += [split_name] * len(x)
        labels.append(split.labels)
        patients += list(split.patient_ids) if split.patient_ids is not None else [None] * len(x)
    task = "multilabel" if ds.task == "multilabel" else None
    return _build(names, np.concatenate(labels), np.array(splits), patients, results), ds.label_names, task


# ------------------------------------------------------------------------------------------- analysis


def _label_keys(labels: np.ndarray) -> list[Any]:
    """A hashable label per row (NaN as None), to compare labels of duplicates."""
    if labels.ndim == 2:
        return [tuple(np.nan_to_num(r, nan=-1).tolist()) for r in labels]
    return [None if np.isnan(v) else float(v) for v in labels.tolist()]


def _split_order(name: str) -> tuple[int, str]:
    return (SPLITS.index(name) if name in SPLITS else len(SPLITS), name)


def _census(img: _Images, rows: np.ndarray, split: str, label_names: list[str]) -> SplitCensus:
    rows = rows[img.readable[rows]]
    labels = img.labels[rows]
    classes: dict[str, int] = {}
    if labels.ndim == 2:
        classes = {name: int(np.nansum(labels[:, j] > 0.5)) for j, name in enumerate(label_names)}
        unknown = int(np.isnan(labels).any(axis=1).sum())
    else:
        known = labels[~np.isnan(labels)].astype(np.int64)
        counts = np.bincount(known, minlength=len(label_names)) if len(known) else np.zeros(len(label_names), int)
        classes = {(label_names[j] if j < len(label_names) else str(j)): int(c) for j, c in enumerate(counts)}
        unknown = int(np.isnan(labels).sum())
    if unknown:
        classes["unknown"] = unknown
    out = SplitCensus(split, len(rows), classes, blank=int((img.std[rows] < _BLANK_STD).sum()))
    if len(rows):
        means = img.mean[rows]
        out.mean, out.std = round(float(means.mean()), 2), round(float(img.std[rows].mean()), 2)
        out.mean_min, out.mean_max = round(float(means.min()), 2), round(float(means.max()), 2)
    return out


def _exact(img: _Images, splits: np.ndarray, keys: list[Any]) -> list[ExactDuplicates]:
    """Pixel-identical groups per split and across splits; rows whose split is None are left out."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(img.readable & (splits != None)):  # noqa: E711 - elementwise on an object array
        groups[img.pixel[i]].append(int(i))
    names = sorted({s for s in splits if s is not None}, key=_split_order)
    out = {s: ExactDuplicates(s) for s in [*names, "across"]}

    def add(res: ExactDuplicates, members: list[int]) -> None:
        res.groups += 1
        res.images += len(members)
        res.label_conflicts += len({keys[i] for i in members}) > 1
        if img.patients is not None:
            res.patient_conflicts += len({img.patients[i] for i in members}) > 1
        if len(res.examples) < _EXAMPLES:
            res.examples.append([str(img.names[i]) for i in members[:4]])

    for members in groups.values():
        if len(members) < 2:
            continue
        by_split: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_split[splits[i]].append(i)
        for s, rows in by_split.items():
            if len(rows) > 1:
                add(out[s], rows)
        if len(by_split) > 1:
            add(out["across"], members)
    return list(out.values())


def _near(
    img: _Images, splits: np.ndarray, keys: list[Any], pairs: np.ndarray, dist: np.ndarray
) -> list[NearDuplicates]:
    """Near-duplicate pairs per split, per pair of splits and across; pairs with a None split are left out."""
    names = sorted({s for s in splits if s is not None}, key=_split_order)
    scopes = [*names, *(f"{a}/{b}" for k, a in enumerate(names) for b in names[k + 1 :])]
    out: dict[str, NearDuplicates] = {s: NearDuplicates(s) for s in scopes}
    seen: dict[str, set[int]] = defaultdict(set)
    for (i, j), d in zip(pairs.tolist(), dist.tolist()):
        si, sj = splits[i], splits[j]
        if si is None or sj is None:
            continue
        for scope in [si] if si == sj else ["/".join(sorted((si, sj), key=_split_order)), "across"]:
            res = out.setdefault(scope, NearDuplicates(scope))
            res.pairs += 1
            res.label_conflicts += keys[i] != keys[j]
            seen[scope].update((i, j))
            if len(res.examples) < _EXAMPLES:
                res.examples.append([str(img.names[i]), str(img.names[j]), int(d)])
    for scope, res in out.items():
        res.images = len(seen[scope])
    out.setdefault("across", NearDuplicates("across"))
    order = [tuple(map(_split_order, r.scope.split("/"))) for r in out.values()]  # train/val before train/test
    return [r for _, r in sorted(zip(order, out.values()), key=lambda t: (t[1].scope == "across", len(t[0]), t[0]))]


def _patients(img: _Images) -> PatientOverlap | None:
    if img.patients is None:
        return None
    where: dict[Any, set[str]] = defaultdict(set)
    count: Counter[Any] = Counter()
    for p, s in zip(img.patients.tolist(), img.splits.tolist()):
        if p is not None and str(p).strip():
            where[p].add(s)
            count[p] += 1
    shared = [p for p, ss in where.items() if len(ss) > 1]
    by_pair: Counter[str] = Counter()
    for p in shared:
        ss = sorted(where[p], key=_split_order)
        by_pair.update(f"{a}/{b}" for k, a in enumerate(ss) for b in ss[k + 1 :])
    return PatientOverlap(len(where), len(shared), sum(count[p] for p in shared), dict(sorted(by_pair.items())))


def _training_split(
    img: _Images, keys: list[Any], label_names: list[str], pairs: np.ndarray, dist: np.ndarray, seed: int
) -> TrainingSplit:
    """Mirror ``medclass train`` on a source without splits: drop repeated bytes, then split (seeded)."""
    from medclass.config import DataConfig
    from medclass.data.decode import duplicate_rows
    from medclass.data.splits import split_indices

    cfg = DataConfig()
    rows = np.flatnonzero(img.readable)
    dropped = 0
    if img.files is not None:
        drop = duplicate_rows([img.files[i] for i in rows])
        dropped = len(drop)
        rows = np.delete(rows, drop)
    groups = None if img.patients is None else img.patients[rows]
    idx = split_indices(img.labels[rows], val=cfg.val_fraction, test=cfg.test_fraction, seed=seed, groups=groups)
    splits = np.full(len(img.names), None, dtype=object)
    for name, sub in idx.items():
        splits[rows[sub]] = name
    census = [_census(img, rows[sub], name, label_names) for name, sub in idx.items()]
    exact = _exact(img, splits, keys)[-1]
    near = [r for r in _near(img, splits, keys, pairs, dist) if "/" in r.scope or r.scope == "across"]
    return TrainingSplit(seed, cfg.val_fraction, cfg.test_fraction, dropped, census, exact, near)


def _byte_identical(img: _Images) -> dict[str, int] | None:
    if img.files is None:
        return None
    rows = np.flatnonzero(img.readable)
    counts = Counter(img.files[i] for i in rows)
    groups = [c for c in counts.values() if c > 1]
    return {"groups": len(groups), "files": sum(groups), "dropped_by_training": sum(groups) - len(groups)}


def _source_kind(spec: str) -> str:
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".csv":
        return "manifest"
    return "folder" if path.is_dir() else "npz"


def audit(
    spec: str,
    *,
    near_distance: int = 4,
    min_correlation: float = 0.97,
    seed: int = 0,
    progress: bool = False,
    label_column: str | None = None,
    group_column: str | None = None,
) -> AuditReport:
    """Audit a dataset for leakage between splits and describe it.

    Leakage rule (``leakage_found``): when the source gives splits, any exact duplicate (identical
    decoded pixels) or near duplicate across two splits, or any patient with images in two splits;
    when it gives none, any exact duplicate whose copies carry different labels.

    A near duplicate is a pair of images, not pixel-identical, whose perceptual hashes differ in at
    most ``near_distance`` of 63 bits and whose 32x32 thumbnails correlate at ``min_correlation`` or
    more (the second test drops look-alikes, e.g. chest X-rays of different patients, whose coarse
    hashes agree).

    Args:
        spec: A folder of class subfolders, a CSV manifest, an ``.npz`` file or a catalog name.
        near_distance: Largest pHash Hamming distance of a near duplicate.
        min_correlation: Smallest thumbnail correlation of a near duplicate (0 keeps every hash match).
        seed: Split seed of the training split reported for sources without splits.
        progress: Show a progress bar while reading files (on a terminal only).
        label_column: A manifest's label column (default ``label``, as for training).
        group_column: A manifest's group column (default ``patient_id``, else ``group_id``).

    Returns:
        The report. Unreadable files are counted and listed, never fatal.

    Raises:
        DataError: The source itself cannot be read (no such folder, bad manifest, bad ``.npz``).
    """
    from medclass.data.phash import hamming, near_duplicate_pairs, thumbnail_correlation

    start = time.perf_counter()
    kind = _source_kind(spec)
    columns = {"label_column": label_column, "group_column": group_column}
    if kind != "manifest" and (label_column or group_column):
        from medclass.errors import DataError

        raise DataError(f"{spec}: --label-column and --group-column apply to CSV manifests only")
    if kind == "npz":
        img, label_names, task = _read_arrays(spec)
    else:
        img, names, task = _read_table(spec, kind, progress, columns)
        width = img.labels.shape[1] if img.labels.ndim == 2 else int(np.nanmax(img.labels, initial=0)) + 1
        label_names = names if names is not None else [str(i) for i in range(max(width, 1))]
    keys = _label_keys(img.labels)
    ok = np.flatnonzero(img.readable)
    pairs = ok[near_duplicate_pairs(img.phash[ok], near_distance)] if len(ok) else np.zeros((0, 2), np.int64)
    pairs = pairs[img.pixel[pairs[:, 0]] != img.pixel[pairs[:, 1]]]
    candidates = len(pairs)
    pairs = pairs[thumbnail_correlation(img.thumbs, pairs) >= min_correlation]
    dist = hamming(img.phash[pairs[:, 0]], img.phash[pairs[:, 1]])
    split_names = sorted(set(img.splits.tolist()), key=_split_order)
    splits_given = split_names != [ALL]
    exact, near, patients = _exact(img, img.splits, keys), _near(img, img.splits, keys, pairs, dist), _patients(img)
    report = AuditReport(
        source=spec,
        kind=kind,
        task="multilabel" if (task == "multilabel" or img.labels.ndim == 2) else "classes",
        label_names=list(label_names),
        images=len(img.names),
        splits_given=splits_given,
        near_distance=near_distance,
        min_correlation=min_correlation,
        near_rejected=candidates - len(pairs),
        splits=[_census(img, np.flatnonzero(img.splits == s), s, label_names) for s in split_names],
        exact=exact,
        near=near,
        byte_identical=_byte_identical(img),
        patients=patients,
        sizes=[[s, c] for s, c in Counter(img.size[ok].tolist()).most_common(5)],
        modes=dict(Counter(img.mode[ok].tolist()).most_common()),
        file_modes=dict(Counter(img.file_mode[ok].tolist()).most_common()),
        unreadable=img.errors,
        training=None if splits_given else _training_split(img, keys, label_names, pairs, dist, seed),
    )
    found = [
        (splits_given and exact[-1].groups, "exact-duplicate group(s) span two or more splits"),
        (splits_given and near[-1].pairs, "near-duplicate pair(s) across splits"),
        (splits_given and patients is not None and patients.shared, "patient(s) have images in two or more splits"),
        (
            not splits_given and sum(e.label_conflicts for e in exact[:-1]),
            "exact-duplicate group(s) carry conflicting labels",
        ),
    ]
    report.reasons = [f"{n} {what}" for n, what in found if n]
    report.leakage_found = bool(report.reasons)
    if kind == "manifest":
        from medclass.data.column_leaks import manifest_column_leaks

        report.columns, report.columns_split = manifest_column_leaks(spec, **columns, seed=seed)
        report.column_warnings = [f"column '{c.column}' {c.verdict()}" for c in report.columns if c.flagged]
    report.seconds = round(time.perf_counter() - start, 2)
    return report
