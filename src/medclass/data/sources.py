"""Data sources: MedMNIST-format ``.npz`` files, folders of class subfolders, CSV manifests.

:func:`load_dataset` picks the source from the spec: a catalog name, an ``.npz`` path, a folder
or a ``.csv`` manifest. Every source returns the same :class:`~medclass.data.dataset.Dataset`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.data import catalog
from medclass.data.dataset import SPLITS, Dataset, Split, resize_images, to_channels_first
from medclass.data.decode import DecodeOptions, decode_stack, duplicate_rows, file_digests
from medclass.data.download import md5sum, resolve
from medclass.data.files import FileTable, read_manifest, scan_folder
from medclass.data.mapped import decode_mapped
from medclass.data.splits import split_indices
from medclass.errors import DataError


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
    ds = _finish(
        name,
        info.task if info else None,
        list(info.label_names) if info else None,
        splits,
        source=str(path),
        image_size=image_size,
        md5=md5,
    )
    if info is not None:
        ds.extra["modality"] = info.modality
    return ds


# ------------------------------------------------------------------------------------ image files


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


def load_files(
    table: FileTable,
    *,
    image_size: int | None = None,
    window: str | None = None,
    frame: str | int = "middle",
    max_pixels: int | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    dedup: bool = True,
    cache: bool = True,
    mmap: str = "auto",
) -> Dataset:
    """Decode a :class:`FileTable` (folder or manifest) into a dataset with train/val/test splits.

    Byte-identical files are kept once (``dedup``), before splitting, so no image can sit in two
    splits; with given splits the copy in train is the one kept. Missing splits are carved out of
    train, by patient when patient IDs exist.

    Args:
        table: The files and their labels.
        image_size: Resize every image to this side length (default: the first image's size).
        window: DICOM windowing (see :class:`~medclass.data.decode.DecodeOptions`).
        frame: Frame of multi-frame files and volumes: ``"middle"`` or an index.
        max_pixels: Refuse images with more pixels than this.
        val: Validation fraction when the source has no validation split.
        test: Test fraction when the source has no test split.
        seed: Seed of that split.
        dedup: Drop exact duplicate files.
        cache: Use the decoded-pixel cache.
        mmap: ``always``: each split is decoded into its own memory-mapped ``.npy`` in the cache and read from it
            (:func:`~medclass.data.mapped.decode_mapped`), so the set never has to fit in memory; ``never``: one
            stack in memory; ``auto``: ``always`` when the decoded set would exceed
            :func:`~medclass.data.mapped.mapped_size_limit` (1 GiB).
    """
    options = DecodeOptions(image_size=image_size, window=window, frame=frame, max_pixels=max_pixels)
    where = table.source
    digests = file_digests(table.paths, where=where)
    keep = np.arange(len(table.paths))
    if dedup:
        rank = None if table.splits is None else [SPLITS.index(s) for s in table.splits]
        keep = np.setdiff1d(keep, duplicate_rows(digests, rank))
    labels = table.labels[keep]
    groups = None if table.patient_ids is None else table.patient_ids[keep]
    rows = None
    if table.splits is not None:
        rows = {s: np.flatnonzero(table.splits[keep] == s).tolist() for s in SPLITS}
    idx = _split_or_carve(rows, labels, groups, val=val, test=test, seed=seed)
    files = [table.paths[i] for i in keep]
    sums = [digests[i] for i in keep]
    if _mapped(mmap, files, options):
        images, mapped = None, _decode_splits(files, sums, idx, options, where)
    else:
        images = decode_stack(files, options, where=where, digests=sums, cache=cache)
    tabular = None if table.tabular is None else table.tabular.subset(keep)
    cases = None if table.cases is None else table.cases[keep]
    splits = {
        s: Split(
            mapped[s] if images is None else images[torch.as_tensor(i)],
            labels[i],
            None if groups is None else groups[i],
            None if tabular is None else tabular.subset(i),
            None if cases is None else cases[i],
        )
        for s, i in idx.items()
    }
    name = Path(where).stem if Path(where).suffix else Path(where).name
    ds = _finish(name, table.task, table.label_names, splits, source=where, image_size=None)
    ds.extra["duplicates_dropped"] = int(len(table.paths) - len(keep))
    ds.extra["decode"] = {"window": window, "frame": frame}
    return ds


_COLUMN_OPTIONS = ("label_column", "group_column", "tabular", "group_by")


def _decode_splits(files: list[Path], sums: list[str], idx: dict, options: Any, where: str) -> dict[str, Any]:
    """Each split decoded into its own memory-mapped stack; all RGB when any split holds a colour file."""

    def decode(rows: Any, colour: bool | None) -> Any:
        return decode_mapped(
            [files[k] for k in rows], options, where=where, digests=[sums[k] for k in rows], colour=colour
        )

    mapped = {s: decode(i, None) for s, i in idx.items()}
    if len({t.shape[1] for t in mapped.values()}) > 1:
        mapped = {s: decode(i, True) for s, i in idx.items()}
    return mapped


def _mapped(mode: str, files: list[Path], options: Any) -> bool:
    """Whether ``files`` decode into memory-mapped splits (``data.mmap``)."""
    if mode not in ("auto", "always", "never"):
        raise DataError(f"data.mmap: '{mode}' is not one of auto, always, never")
    if mode != "auto":
        return mode == "always"
    from medclass.data.mapped import mapped_size_limit

    side = options.image_size
    if side is None:
        from medclass.io.images import read_image

        side = max(read_image(files[0], window=options.window, frame=options.frame).shape[:2])
    return len(files) * 3 * side * side > mapped_size_limit()  # 3: a colour set, the larger case


def _manifest_only(spec: str | Path, options: dict[str, Any]) -> None:
    """Refuse manifest column options (``_COLUMN_OPTIONS``) for sources that have no columns (folders, ``.npz``)."""
    options = tuple((k, options.get(k)) for k in _COLUMN_OPTIONS)
    given = [f"{k}={v!r}" for k, v in options if v]
    if given:
        raise DataError(f"{spec}: {', '.join(given)} applies to CSV manifests only; this source has no columns")


def load_folder(
    path: str | Path,
    label_column: str | None = None,
    group_column: str | None = None,
    tabular: list[str] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Load a folder of class subfolders (``ROOT/<class>/*``), optionally under split folders.

    ``ROOT/{train,val,test}/<class>/...`` uses the given splits (a missing val/test split is carved
    out of train); otherwise a seeded stratified split is made. Keyword arguments are those of
    :func:`load_files`; ``label_column``/``group_column``/``tabular`` are refused (a folder has no columns).
    """
    _manifest_only(path, {"label_column": label_column, "group_column": group_column, "tabular": tabular, **kwargs})
    kwargs.pop("group_by", None)
    return load_files(scan_folder(path), **kwargs)


def load_manifest(
    path: str | Path,
    label_column: str | None = None,
    group_column: str | None = None,
    tabular: list[str] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Load a CSV manifest (see :func:`medclass.data.files.read_manifest` for its columns).

    Without a ``split`` column, a seeded stratified split is made, by group when the manifest has
    one (``group_column``, else ``patient_id``, else ``group_id``). Missing val/test splits are
    carved out of train by group. ``tabular`` columns travel with the rows of every split as their raw
    clinical fields (:attr:`~medclass.data.dataset.Split.tabular`). Other keyword arguments are those of
    :func:`load_files`.
    """
    cases = kwargs.pop("group_by", None)
    table = read_manifest(path, label_column=label_column, group_column=group_column, tabular=tabular, group_by=cases)
    return load_files(table, **kwargs)


# ------------------------------------------------------------------------------------- dispatcher


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    download: bool = True,
    **file_options: Any,
) -> Dataset:
    """Load data from a spec: catalog name (``breastmnist@64``), ``.npz``, folder or ``.csv`` manifest.

    Args:
        spec: What to load.
        image_size: Optional resize of every image.
        val: Validation fraction for sources without splits.
        test: Test fraction for sources without splits.
        seed: Seed of that split.
        download: Allow downloading catalog files that are not found locally.
        **file_options: For folders and manifests, options of :func:`load_files` (``window``,
            ``frame``, ``max_pixels``, ``dedup``, ``cache``); for manifests also ``label_column``,
            ``group_column`` and ``tabular`` (refused for other sources).

    Returns:
        The dataset, fully in memory.
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npz" or (path.is_file() and zipfile.is_zipfile(path)):
        _manifest_only(spec, file_options)
        return load_npz(path, image_size=image_size)
    if path.suffix.lower() == ".csv":
        return load_manifest(path, image_size=image_size, val=val, test=test, seed=seed, **file_options)
    if path.is_dir():
        return load_folder(path, image_size=image_size, val=val, test=test, seed=seed, **file_options)
    parsed = catalog.parse_spec(spec)
    if parsed is None:
        if path.exists():
            raise DataError(f"{spec}: unsupported data file (use .npz, .csv or a folder)")
        catalog.get_info(spec.split("@")[0])  # raises "unknown dataset" with suggestions
        raise DataError(f"{spec}: not found")
    info, size = parsed
    _manifest_only(spec, file_options)

    file = resolve(info, size, download=download)
    return load_npz(file, image_size=image_size, info=info)


def load_configured(data: Any) -> Dataset:
    """Load the data a run's ``data`` configuration (:class:`medclass.config.DataConfig`) describes."""
    return load_dataset(
        data.spec,
        image_size=data.image_size,
        val=data.val_fraction,
        test=data.test_fraction,
        seed=data.split_seed,
        **data.file_options(),
    )
