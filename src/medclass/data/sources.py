"""Data sources: MedMNIST-format ``.npz`` files, folders of class subfolders, CSV manifests.

:func:`load_dataset` picks the source from the spec: a catalog name, an ``.npz`` path, a folder
or a ``.csv`` manifest. Every source returns the same :class:`~medclass.data.dataset.Dataset`.
"""

from __future__ import annotations

import csv
import math
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medclass.data import catalog
from medclass.data.dataset import SPLITS, Dataset, Split, resize_images, to_channels_first
from medclass.data.download import md5sum, resolve
from medclass.data.splits import split_indices
from medclass.errors import DataError, InvalidImageError
from medclass.io.images import is_image_file, read_image


def infer_task(labels: np.ndarray) -> str:
    """Guess the task from a label array: 2-D with >1 column is multi-label, 2 classes binary."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return "multilabel"
    known = labels[~np.isnan(labels)]
    return "binary" if np.unique(known).size <= 2 and (known.max(initial=0) <= 1) else "multiclass"


def _finish(
    name: str,
    task: str | None,
    label_names: list[str] | None,
    splits: dict[str, Split],
    *,
    source: str,
    image_size: int | None,
    md5: str | None = None,
) -> Dataset:
    """Resize, infer missing task/label names, check the splits and build the Dataset."""
    for split_name in SPLITS:
        if split_name not in splits or len(splits[split_name]) == 0:
            raise DataError(f"{source}: split '{split_name}' is empty")
    if image_size:
        for s in splits.values():
            s.images = resize_images(s.images, image_size)
    all_labels = np.concatenate([s.labels for s in splits.values()])
    task = task or infer_task(all_labels)
    if label_names is None:
        if task == "multilabel":
            label_names = [str(i) for i in range(all_labels.shape[1])]
        else:
            known = all_labels[~np.isnan(all_labels)]
            label_names = [str(i) for i in range(max(int(known.max(initial=0)) + 1, 2))]
    if task != "multilabel":
        known = all_labels[~np.isnan(all_labels)]
        if known.size and (known.min() < 0 or known.max() >= len(label_names) or np.any(known != np.round(known))):
            raise DataError(f"{source}: labels must be class indices 0..{len(label_names) - 1}")
    return Dataset(name=name, task=task, label_names=list(label_names), splits=splits, source=source, md5=md5)


# --------------------------------------------------------------------------------------------- npz


def load_npz(
    path: str | Path,
    *,
    image_size: int | None = None,
    info: catalog.DatasetInfo | None = None,
) -> Dataset:
    """Load a MedMNIST-format ``.npz`` (keys ``{train,val,test}_{images,labels}``).

    Args:
        path: The file.
        image_size: Optional resize.
        info: Catalog entry, when the caller already knows it; otherwise matched by MD5, then name.

    Returns:
        The dataset; task and label names come from the catalog when the file matches an entry,
        else are inferred from the labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    md5 = md5sum(path)
    if info is None:
        match = catalog.match_file(path, md5)
        info = match[0] if match else None
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a valid .npz file (not a zip archive; truncated or corrupt?)")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    splits: dict[str, Split] = {}
    with npz:
        keys = set(npz.files)
        for split_name in SPLITS:
            for kind in ("images", "labels"):
                if f"{split_name}_{kind}" not in keys:
                    raise DataError(
                        f"{path}: missing key '{split_name}_{kind}' (found: {', '.join(sorted(keys)) or 'none'})"
                    )
            try:
                images = npz[f"{split_name}_images"]
                labels = npz[f"{split_name}_labels"]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise DataError(f"{path}: cannot read '{split_name}' arrays ({err})") from None
            if images.shape[0] != labels.shape[0]:
                raise DataError(f"{path}: {split_name} has {images.shape[0]} images but {labels.shape[0]} labels")
            if images.dtype != np.uint8:
                from medclass.io.images import to_uint8

                images = to_uint8(images)
            images = to_channels_first(images, spatial_dims=info.ndim if info else None, where=str(path))
            labels = labels.astype(np.float32)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            splits[split_name] = Split(torch.from_numpy(np.ascontiguousarray(images)), labels)
    name = info.name if info else path.stem
    return _finish(
        name,
        info.task if info else None,
        list(info.label_names) if info else None,
        splits,
        source=str(path),
        image_size=image_size,
        md5=md5,
    )


# ------------------------------------------------------------------------------------ image files


def _read_stack(paths: list[Path], image_size: int | None, *, where: str) -> torch.Tensor:
    """Read images (threads), bring them to one size and colour mode, stack as ``(N, C, H, W)`` uint8."""
    if not paths:
        raise DataError(f"{where}: no images found")
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = list(pool.map(read_image, paths))
    colour = any(a.ndim == 3 for a in arrays)
    size = image_size or arrays[0].shape[0]
    from PIL import Image

    out = np.empty((len(arrays), 3 if colour else 1, size, size), dtype=np.uint8)
    for i, a in enumerate(arrays):
        if colour and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        if a.shape[0] != size or a.shape[1] != size:
            a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = a.transpose(2, 0, 1) if colour else a[None]
    return torch.from_numpy(out)


def _split_or_carve(
    rows: dict[str, list[int]] | None,
    labels: np.ndarray,
    groups: np.ndarray | None,
    *,
    val: float,
    test: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Use given split assignments; carve any missing split out of train (seeded, stratified, grouped)."""
    if rows is None:
        return split_indices(labels, val=val, test=test, seed=seed, groups=groups)
    out = {k: np.asarray(v, dtype=np.int64) for k, v in rows.items()}
    train = out.get("train", np.zeros(0, dtype=np.int64))
    missing = [s for s in ("val", "test") if len(out.get(s, [])) == 0]
    if missing and len(train):
        fracs = {"val": val if "val" in missing else 0.0, "test": test if "test" in missing else 0.0}
        sub = split_indices(
            labels[train],
            val=fracs["val"],
            test=fracs["test"],
            seed=seed,
            groups=None if groups is None else groups[train],
        )
        out["train"] = train[sub["train"]]
        for s in missing:
            out[s] = train[sub[s]]
    return out


def load_folder(
    path: str | Path, *, image_size: int | None = None, val: float = 0.1, test: float = 0.2, seed: int = 0
) -> Dataset:
    """Load a folder of class subfolders (``ROOT/<class>/*.png``), optionally under split folders.

    ``ROOT/{train,val,test}/<class>/...`` uses the given splits (a missing val/test split is carved
    out of train); otherwise a seeded stratified split is made.
    """
    root = Path(path)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in subdirs if p.name.lower() in SPLITS]
    entries: list[tuple[Path, str, str | None]] = []
    if split_dirs:
        for sd in split_dirs:
            for cd in sorted(p for p in sd.iterdir() if p.is_dir() and not p.name.startswith(".")):
                entries += [(f, cd.name, sd.name.lower()) for f in sorted(cd.rglob("*")) if is_image_file(f)]
    else:
        for cd in subdirs:
            entries += [(f, cd.name, None) for f in sorted(cd.rglob("*")) if is_image_file(f)]
    if not entries:
        raise DataError(f"{root}: no images found in class subfolders (expected ROOT/<class>/*.png|jpg)")
    class_names = sorted({c for _, c, _ in entries})
    if len(class_names) < 2:
        raise DataError(f"{root}: found only one class folder '{class_names[0]}'; need at least two")
    labels = np.array([class_names.index(c) for _, c, _ in entries], dtype=np.float32)
    rows = None
    if split_dirs:
        rows = {s: [i for i, e in enumerate(entries) if e[2] == s] for s in SPLITS}
    idx = _split_or_carve(rows, labels, None, val=val, test=test, seed=seed)
    images = _read_stack([e[0] for e in entries], image_size, where=str(root))
    splits = {s: Split(images[torch.as_tensor(i)], labels[i]) for s, i in idx.items()}
    return _finish(root.name, None, class_names, splits, source=str(root), image_size=None)


def _parse_label(value: str, *, where: str) -> float | str:
    value = value.strip()
    if value == "" or value.lower() in ("nan", "na", "?", "unknown", "-1"):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return value


def load_manifest(
    path: str | Path, *, image_size: int | None = None, val: float = 0.1, test: float = 0.2, seed: int = 0
) -> Dataset:
    """Load a CSV manifest: ``path,label[,patient_id][,split]``, or several label columns for multi-label.

    Relative paths resolve against the manifest's folder. Label cells may be class names or indices
    (single label column), or 0/1 (several label columns, multi-label); empty cells are unknown.
    Without a ``split`` column, a seeded stratified split is made, by patient when ``patient_id`` exists.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            records = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if "path" not in header:
        raise DataError(f"{path}: manifest needs a 'path' column (found: {', '.join(header)})")
    reserved = {"path", "patient_id", "split"}
    label_cols = [h for h in header if h not in reserved]
    if not label_cols:
        raise DataError(f"{path}: manifest needs at least one label column besides path/patient_id/split")
    if not records:
        raise DataError(f"{path}: manifest has no rows")
    base = path.parent
    files = [(base / r["path"]) if not Path(r["path"]).is_absolute() else Path(r["path"]) for r in records]
    where = str(path)
    if len(label_cols) == 1:
        raw = [_parse_label(r[label_cols[0]], where=where) for r in records]
        if any(isinstance(v, str) for v in raw):
            names = sorted({v for v in raw if isinstance(v, str)})
            labels = np.array([names.index(v) if isinstance(v, str) else math.nan for v in raw], dtype=np.float32)
            label_names: list[str] | None = names
        else:
            labels = np.array(raw, dtype=np.float32)
            label_names = None
        task = None
    else:
        labels = np.empty((len(records), len(label_cols)), dtype=np.float32)
        for i, r in enumerate(records):
            for j, c in enumerate(label_cols):
                v = _parse_label(r[c], where=where)
                if isinstance(v, str) or (not math.isnan(v) and v not in (0.0, 1.0)):
                    raise DataError(f"{path}: row {i + 2}, column '{c}': multi-label values must be 0, 1 or empty")
                labels[i, j] = v
        label_names, task = label_cols, "multilabel"
    groups = np.array([r["patient_id"] for r in records], dtype=object) if "patient_id" in header else None
    rows = None
    if "split" in header:
        values = [r["split"].strip().lower() for r in records]
        bad = sorted({v for v in values if v not in SPLITS})
        if bad:
            raise DataError(f"{path}: unknown split value(s) {bad}; use train/val/test")
        rows = {s: [i for i, v in enumerate(values) if v == s] for s in SPLITS}
    idx = _split_or_carve(rows, labels, groups, val=val, test=test, seed=seed)
    try:
        images = _read_stack(files, image_size, where=where)
    except InvalidImageError as err:
        raise DataError(f"{path}: {err}") from None
    splits = {
        s: Split(images[torch.as_tensor(i)], labels[i], None if groups is None else groups[i]) for s, i in idx.items()
    }
    return _finish(path.stem, task, label_names, splits, source=where, image_size=None)


# ------------------------------------------------------------------------------------- dispatcher


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load data from a spec: catalog name (``breastmnist@64``), ``.npz``, folder or ``.csv`` manifest.

    Args:
        spec: What to load.
        image_size: Optional resize of every image.
        val: Validation fraction for sources without splits.
        test: Test fraction for sources without splits.
        seed: Seed of that split.
        download: Allow downloading catalog files that are not found locally.

    Returns:
        The dataset, fully in memory.
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npz" or (path.is_file() and zipfile.is_zipfile(path)):
        return load_npz(path, image_size=image_size)
    if path.suffix.lower() == ".csv":
        return load_manifest(path, image_size=image_size, val=val, test=test, seed=seed)
    if path.is_dir():
        return load_folder(path, image_size=image_size, val=val, test=test, seed=seed)
    parsed = catalog.parse_spec(spec)
    if parsed is None:
        if path.exists():
            raise DataError(f"{spec}: unsupported data file (use .npz, .csv or a folder)")
        catalog.get_info(spec.split("@")[0])  # raises "unknown dataset" with suggestions
        raise DataError(f"{spec}: not found")
    info, size = parsed

    file = resolve(info, size, download=download)
    return load_npz(file, image_size=image_size, info=info)
