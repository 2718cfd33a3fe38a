"""Pools of unlabelled images for pretraining and semi-supervised training, kept apart from evaluation images.

Self-supervised and semi-supervised training may only see training images. A pooled source (another
data set, a folder of archive images) can hold copies of the images a task is evaluated on: the
Kermany chest X-ray folder holds PneumoniaMNIST's 624 test images, resized to 224 px without a crop,
where PneumoniaMNIST centre-cropped them to 28 px. Every pooled image is therefore compared with the
task's validation and test images, and dropped when it is

* the same pixels (SHA-256 of the image at the task's size), or
* a near copy: the Pearson correlation of grey 32x32 thumbnails reaches ``min_correlation``, for the
  whole pooled image or one of its central crops (a band of 50-100% of the width, or of the height,
  in steps of 2.5%), so a copy that was cropped or squeezed differently is still found.

Volumes are compared on their middle slice, uncropped. The comparison is a dense matrix product:
about 10 s for 5,800 pooled images against 1,150 held-out ones on two cores.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medclass.data.dataset import Dataset, resize_images
from medclass.errors import DataError

log = logging.getLogger(__name__)

#: Correlation at or above which a thumbnail match is a copy. Measured on PneumoniaMNIST's test images
#: against the Kermany folder: 551 of its 618 test images match at 0.95 and none of its 5,190 training
#: images (whose best look-alikes reach 0.944); see BENCHMARKS.md "Learning from few labels".
MIN_CORRELATION = 0.95
THUMB = 32
CROPS = tuple(round(0.5 + 0.025 * i, 3) for i in range(21))  # 0.5 .. 1.0


@dataclass
class Overlap:
    """Which pooled images copy a reference image.

    Attributes:
        copies: ``(N,)`` bool, True for a pooled image that is an exact or near copy.
        exact: How many are the same pixels.
        near: How many more are near copies (resized, cropped, re-encoded).
    """

    copies: np.ndarray
    exact: int
    near: int


def _grey(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` or ``(N, C, D, H, W)`` uint8 -> ``(N, 1, H, W)`` float grey (middle slice of volumes)."""
    x = images[:, :, images.shape[2] // 2] if images.ndim == 5 else images
    return x.float().mean(dim=1, keepdim=True)


def _unit(thumbs: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 32, 32)`` -> ``(N, 1024)`` rows with zero mean and unit norm (a flat image stays 0)."""
    x = thumbs.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def thumbnail_views(images: torch.Tensor, *, crops: bool = True) -> list[torch.Tensor]:
    """Normalised thumbnails ``(N, 1024)`` of a ``uint8`` stack, whole and (2D, ``crops``) central crops.

    Args:
        images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` uint8.
        crops: Add the central bands of :data:`CROPS` of the width and of the height.

    Returns:
        One ``(N, 1024)`` float32 tensor per view, the whole image first.
    """
    grey = _grey(images)
    h, w = grey.shape[-2:]

    def shrink(x: torch.Tensor) -> torch.Tensor:
        big = min(x.shape[-2:]) > THUMB
        return _unit(F.interpolate(x, size=(THUMB, THUMB), mode="bilinear", align_corners=False, antialias=big))

    views = [shrink(grey)]
    if crops and images.ndim == 4:
        for r in CROPS[:-1]:
            cw, ch = max(1, round(w * r)), max(1, round(h * r))
            views.append(shrink(grey[..., :, (w - cw) // 2 : (w - cw) // 2 + cw]))
            views.append(shrink(grey[..., (h - ch) // 2 : (h - ch) // 2 + ch, :]))
    return views


def pixel_digests(images: torch.Tensor) -> list[bytes]:
    """SHA-256 of each image's bytes (``(N, C, ...)`` uint8), for exact matches."""
    flat = np.ascontiguousarray(images.numpy()).reshape(len(images), -1)
    return [hashlib.sha256(row.tobytes()).digest() for row in flat]


def best_correlation(pool: torch.Tensor, reference: torch.Tensor, *, chunk: int = 2048) -> np.ndarray:
    """For each pooled image, its highest thumbnail correlation with any reference image over every view.

    Args:
        pool: ``uint8`` ``(N, C, ...)``.
        reference: ``uint8`` ``(M, C, ...)``, any size; compared whole.
        chunk: Pooled images per block (memory bound).

    Returns:
        ``(N,)`` float32 in [-1, 1].
    """
    ref = thumbnail_views(reference, crops=False)[0].T.contiguous()  # (1024, M)
    out = []
    for lo in range(0, len(pool), chunk):
        views = thumbnail_views(pool[lo : lo + chunk])
        best = torch.stack([(v @ ref).amax(dim=1) for v in views]).amax(dim=0)
        out.append(best)
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def find_copies(pool: torch.Tensor, reference: torch.Tensor, *, min_correlation: float = MIN_CORRELATION) -> Overlap:
    """Mark the images of ``pool`` that are exact or near copies of an image in ``reference``.

    Args:
        pool: ``uint8`` ``(N, C, ...)`` candidate images.
        reference: ``uint8`` ``(M, C, ...)`` images that must not be trained on (validation, test); any size.
        min_correlation: Smallest thumbnail correlation of a near copy.

    Returns:
        The :class:`Overlap`; ``copies`` has shape ``(N,)``.
    """
    copies = np.zeros(len(pool), dtype=bool)
    if not len(pool) or not len(reference):
        return Overlap(copies, 0, 0)
    if pool.shape[1:] == reference.shape[1:]:
        ref = set(pixel_digests(reference))
        copies[:] = [d in ref for d in pixel_digests(pool)]
    exact = int(copies.sum())
    copies |= best_correlation(pool, reference) >= min_correlation
    return Overlap(copies, exact, int(copies.sum()) - exact)


def _fit_to(images: torch.Tensor, dataset: Dataset, spec: str) -> torch.Tensor:
    """``images`` with the task's channels, dimensions and size, or a one-line DataError naming ``spec``."""
    want = dataset.sample_shape
    have = tuple(images.shape[1:])
    if len(have) != len(want):
        kinds = {3: "2D images", 4: "3D volumes"}
        raise DataError(f"{spec}: holds {kinds.get(len(have), have)}, but the task has {kinds.get(len(want), want)}")
    if have[0] != want[0]:
        raise DataError(f"{spec}: images have {have[0]} channel(s), the task's have {want[0]}")
    if have[1:] != want[1:]:
        if len(set(want[1:])) != 1:
            raise DataError(
                f"{spec}: images are {'x'.join(map(str, have[1:]))}, the task's {'x'.join(map(str, want[1:]))}"
            )
        images = resize_images(images, int(want[1]))
    return images


def read_images(spec: str, options: dict | None = None) -> torch.Tensor:
    """Every image of a source, labels ignored, as ``uint8`` ``(N, C, ...)``.

    A folder is read whole (any layout: class subfolders or none, byte-identical files once); a ``.npy`` array
    or an ``.npz`` with any ``*images`` arrays is read as images; anything else (catalog name, manifest, a
    MedMNIST-format ``.npz``) through :func:`~medclass.data.sources.load_dataset`, all splits.

    Args:
        spec: The source.
        options: ``window``, ``frame``, ``max_pixels``, ``dedup`` for image files.
    """
    from pathlib import Path

    from medclass.data.dataset import to_channels_first
    from medclass.data.sources import load_dataset

    opts = dict(options or {})
    path = Path(spec).expanduser()
    if path.is_dir():
        from medclass.data.decode import DecodeOptions, decode_stack, duplicate_rows, file_digests
        from medclass.io.images import is_image_file

        files = [f for f in sorted(path.rglob("*")) if f.is_file() and not f.name.startswith(".") and is_image_file(f)]
        if not files:
            raise DataError(f"{spec}: no image files in this folder")
        digests = file_digests(files, where=spec)
        keep = np.setdiff1d(np.arange(len(files)), duplicate_rows(digests) if opts.get("dedup", True) else [])
        decode = DecodeOptions(**{k: opts[k] for k in ("window", "frame", "max_pixels") if opts.get(k) is not None})
        return decode_stack([files[i] for i in keep], decode, where=spec, digests=[digests[i] for i in keep])
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        try:
            data = np.load(path, allow_pickle=False)
            if isinstance(data, np.ndarray):
                arrays = [data]
            else:
                with data:
                    arrays = [data[k] for k in data.files if k.endswith("images")]
        except (OSError, ValueError) as err:
            raise DataError(f"{spec}: not a readable array file ({err})") from None
        if not arrays:
            raise DataError(f"{spec}: no '*images' array in this file")
        stacks = [to_channels_first(a, spatial_dims=None, where=spec) for a in arrays]
        return torch.from_numpy(np.concatenate(stacks)).to(torch.uint8)
    source = load_dataset(spec, **opts)
    return torch.cat([s.images for s in source.splits.values() if len(s)])


def pool_unlabeled(
    specs: list[str],
    dataset: Dataset,
    *,
    min_correlation: float = MIN_CORRELATION,
    image_options: dict | None = None,
) -> torch.Tensor:
    """Every image of ``specs`` (all their splits, labels ignored), fitted to ``dataset`` and cleared of its val/test.

    Args:
        specs: Data specs (catalog names, ``.npz``, folders, manifests).
        dataset: The task; its validation and test images are never pooled.
        min_correlation: Thumbnail correlation of a near copy.
        image_options: Options for folders and manifests (``window``, ``frame``, ...).

    Returns:
        ``uint8`` ``(N, C, ...)`` images of the task's shape.

    Raises:
        DataError: A source with other channels or dimensions than the task.
    """
    held_out = [s.images for k, s in dataset.splits.items() if k != "train" and len(s)]
    reference = torch.cat(held_out) if held_out else dataset.splits["train"].images[:0]
    pooled = []
    for spec in specs:
        images = read_images(spec, image_options)  # at its own size: crops are compared before resizing
        _fit_to(images[:1], dataset, spec)  # channels and dimensions first, with a clear error
        found = find_copies(images, reference, min_correlation=min_correlation)
        total = len(images)
        images = _fit_to(images[torch.from_numpy(~found.copies)], dataset, spec)
        log.info(
            "unlabelled %s: kept %d of %d images; dropped %d exact and %d near copies of %s's validation/test images",
            spec,
            len(images),
            total,
            found.exact,
            found.near,
            dataset.name,
        )
        pooled.append(images)
    if not pooled:
        return dataset.splits["train"].images[:0]
    return torch.cat(pooled)
