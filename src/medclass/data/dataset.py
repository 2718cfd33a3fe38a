"""In-memory dataset container shared by every data source.

Images are held as one ``uint8`` tensor per split, shaped ``(N, C, H, W)`` for 2D data or
``(N, C, D, H, W)`` for 3D volumes. Labels are ``float32`` arrays: ``(N,)`` class indices for
binary, multi-class and ordinal tasks, ``(N, L)`` 0/1 values for multi-label tasks; ``NaN`` marks
an unknown label. Patient identifiers, when known, travel with the rows so that splits and
confidence intervals can respect them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medclass.data.mapped import release
from medclass.data.tabular import TabularTable
from medclass.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split of a dataset.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        labels: ``float32`` array ``(N,)`` or ``(N, L)``; NaN = unknown.
        patient_ids: Optional array ``(N,)`` of strings; rows of one patient share an ID.
        tabular: Optional raw clinical fields of the ``N`` rows (a manifest's ``--tabular`` columns), encoded
            by the schema fitted on the training split (:mod:`medclass.data.tabular`).
        cases: Optional array ``(N,)`` of case identifiers (``data.group_by``): images of one case get one
            prediction (:func:`medclass.metrics.cases.case_logits`).
    """

    images: torch.Tensor
    labels: np.ndarray
    patient_ids: np.ndarray | None = None
    tabular: TabularTable | None = None
    cases: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> Split:
        """Rows ``index`` of this split, as a new Split (patients and clinical fields kept aligned)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pids = None if self.patient_ids is None else self.patient_ids[index]
        tabular = None if self.tabular is None else self.tabular.subset(index)
        cases = None if self.cases is None else self.cases[index]
        return Split(self.images[idx], self.labels[index], pids, tabular, cases)


@dataclass
class Dataset:
    """A labelled dataset with train/val/test splits, held in memory.

    Attributes:
        name: Short name (catalog name or file stem).
        task: ``binary``, ``multiclass``, ``multilabel`` or ``ordinal``.
        label_names: Class names (or label names for multi-label), by index.
        splits: ``{"train": Split, "val": Split, "test": Split}``.
        source: Where the data came from (a path or catalog name), for messages; checkpoints keep
            :meth:`record` instead, which holds no path.
        md5: MD5 of the source file when it is a single file.
    """

    name: str
    task: str
    label_names: list[str]
    splits: dict[str, Split]
    source: str = ""
    md5: str | None = None
    extra: dict = field(default_factory=dict)
    _digest: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """Number of model outputs needed: classes, or labels for multi-label."""
        return len(self.label_names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(C, H, W)`` or ``(C, D, H, W)``."""
        return tuple(self.splits["train"].images.shape[1:])

    @property
    def channels(self) -> int:
        return self.sample_shape[0]

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return len(self.sample_shape) - 1

    def describe(self) -> str:
        """One line: name, task, shape and split sizes."""
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        shape = "x".join(str(s) for s in self.sample_shape)
        dups = self.extra.get("duplicates_dropped")
        note = f" ({dups} duplicate files dropped)" if dups else ""
        return f"{self.name}: {self.task}, {self.num_classes} classes, images {shape}, {sizes}{note}"

    def record(self) -> dict[str, str]:
        """How a checkpoint names this data: its ``name`` and a content hash, never a file-system path.

        ``md5`` of the ``.npz`` file it was read from (the catalog's checksum for MedMNIST files, so
        ``md5sum`` verifies it); otherwise ``sha256`` of the decoded content (:meth:`content_sha256`).
        """
        if self.md5:
            return {"name": self.name, "md5": self.md5}
        return {"name": self.name, "sha256": self.content_sha256()}

    def content_sha256(self) -> str:
        """SHA-256 of what a model sees: per split, in order, its name, the images' shape and bytes, and the labels
        (and, for clinical fields, each column's name and values).

        Computed once while the split arrays stay the same objects.
        """
        import hashlib

        key = tuple((k, id(s.images), id(s.labels)) for k, s in self.splits.items())
        if self._digest is not None and self._digest[0] == key:
            return self._digest[1]
        h = hashlib.sha256()
        for name in [*[k for k in SPLITS if k in self.splits], *sorted(set(self.splits) - set(SPLITS))]:
            split = self.splits[name]
            images = np.ascontiguousarray(split.images.cpu().numpy())
            labels = np.ascontiguousarray(split.labels, dtype=np.float32)
            h.update(f"{name}|{images.dtype}|{images.shape}|{labels.shape}|".encode())
            for start in range(0, len(images), 256):  # views of the contiguous arrays: no copy
                h.update(images[start : start + 256].reshape(-1).view(np.uint8))
                release(split.images)
            h.update(labels.reshape(-1).view(np.uint8))
            columns = split.tabular.columns if split.tabular is not None else {}
            for column, values in columns.items():
                h.update(f"|{column}|".encode() + "\x1f".join(map(str, values)).encode())
        self._digest = (key, h.hexdigest())
        return self._digest[1]


def to_channels_first(images: np.ndarray, *, spatial_dims: int | None, where: str) -> np.ndarray:
    """Bring a stack of images into ``(N, C, *spatial)`` layout.

    Args:
        images: ``(N, H, W)``, ``(N, H, W, C)`` with C in {1, 3}, ``(N, D, H, W)`` or ``(N, D, H, W, C)``.
        spatial_dims: 2 or 3 when known (from a catalog entry); ``None`` to infer: a 4-D array whose
            last axis is 1 or 3 is read as 2D channels-last, otherwise as a 3D volume.
        where: File name used in error messages.

    Returns:
        The array with a channel axis after the batch axis.
    """
    nd = images.ndim
    if spatial_dims is None:
        if nd == 3:
            spatial_dims = 2
        elif nd == 4:
            spatial_dims = 2 if images.shape[-1] in (1, 3) else 3
        elif nd == 5:
            spatial_dims = 3
        else:
            raise DataError(f"{where}: images have {nd} dimensions; expected (N,H,W), (N,H,W,C) or (N,D,H,W)")
    if nd == spatial_dims + 1:
        return images[:, None]
    if nd == spatial_dims + 2 and images.shape[-1] in (1, 3):
        return np.moveaxis(images, -1, 1)
    raise DataError(f"{where}: images of shape {images.shape} do not fit {spatial_dims}D data")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``uint8`` image stack to ``size`` per spatial side (bilinear/trilinear, antialiased down).

    Args:
        images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` uint8.
        size: Target side length.

    Returns:
        ``uint8`` tensor with every spatial side equal to ``size``.
    """
    spatial = images.shape[2:]
    if all(s == size for s in spatial):
        return images
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    out = []
    for chunk in torch.split(images, 1024):
        x = chunk.float()
        antialias = mode == "bilinear" and min(spatial) > size
        y = F.interpolate(x, size=(size,) * len(spatial), mode=mode, align_corners=False, antialias=antialias)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class counts of known labels: class histogram, or positives per label for multi-label."""
    if labels.ndim == 2:
        return np.nansum(labels, axis=0).astype(np.int64)
    known = labels[~np.isnan(labels)].astype(np.int64)
    return np.bincount(known, minlength=num_classes)


def balanced_order(labels: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """One epoch of row indices drawn with replacement so every class is equally likely.

    Each row is drawn with probability ``1 / (K * count(class))``; multi-label rows use their rarest
    positive label (all-negative rows count as one more class); unknown labels count as one class.

    Args:
        labels: ``(N,)`` class indices or ``(N, L)`` 0/1 labels, NaN = unknown.
        generator: Source of randomness.

    Returns:
        ``(N,)`` int64 row indices.
    """
    if labels.ndim == 2:
        pos = np.nan_to_num(labels, nan=0.0) > 0.5
        freq = pos.sum(0)
        rarest = np.where(pos, freq[None, :], np.iinfo(np.int64).max).argmin(1)
        key = np.where(pos.any(1), rarest, labels.shape[1])
    else:
        key = np.where(np.isnan(labels), -1, labels).astype(np.int64)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    weights = torch.from_numpy(1.0 / counts[inverse])
    return torch.multinomial(weights, len(key), replacement=True, generator=generator)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images_uint8, labels, index)`` batches straight from memory (no worker processes).

    Args:
        split: The split to walk.
        batch_size: Rows per batch (the last batch may be smaller).
        shuffle: Visit rows in a random order drawn from ``generator``.
        generator: Source of randomness for the shuffle.
        order: Explicit row order (e.g. :func:`balanced_order`); overrides ``shuffle``.

    Yields:
        ``uint8`` images ``(B, C, ...)``, ``float32`` labels ``(B,)`` or ``(B, L)``, and row indices ``(B,)``.
    """
    n = len(split)
    if order is None:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n = len(order)
    labels = torch.from_numpy(np.ascontiguousarray(split.labels, dtype=np.float32))
    for k, start in enumerate(range(0, n, batch_size)):
        idx = order[start : start + batch_size]
        yield split.images[idx], labels[idx], idx
        if k % 8 == 7:
            release(split.images)  # a memory-mapped split: keep a few batches' pages resident, not the set
