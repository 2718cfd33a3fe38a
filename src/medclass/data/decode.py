"""Decode a list of image files into one ``uint8`` stack, once: an on-disk cache keyed by file content.

Decoding DICOM or JPEG files is far slower than training on the decoded pixels, so the stack is
stored under ``<cache>/decoded/<key>.npy``. The key hashes every file's bytes together with the
decode options, so an edited, added or removed file gives a new key and stale pixels are never
used; renaming or moving the folder keeps the cache valid.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medclass.data.download import cache_dir
from medclass.errors import DataError, InvalidImageError
from medclass.utils.files import atomic_path
from medclass.utils.progress import show_progress

log = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when decoding changes what a file turns into
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DecodeOptions:
    """How files become pixels.

    Attributes:
        image_size: Side length of the output images; ``None`` uses the first image's size.
        window: DICOM windowing: ``None`` (the file's own VOI LUT/window when present, else the
            0.5-99.5 percentile range), a preset name such as ``ct_lung``, or ``"minmax"``.
        frame: Which frame of a multi-frame file or volume: ``"middle"`` or an index.
        max_pixels: Refuse any image with more pixels than this (decompression bombs).
    """

    image_size: int | None = None
    window: str | None = None
    frame: str | int = "middle"
    max_pixels: int | None = None

    def key(self) -> str:
        return f"v{_CACHE_VERSION}|{self.image_size}|{self.window}|{self.frame}|{self.max_pixels}"


def file_digest(path: Path) -> str:
    """SHA-1 of a file's bytes (a cache key and an exact-duplicate test, not a security measure)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: Sequence[Path], *, where: str) -> list[str]:
    """SHA-1 of every file, read in threads; a missing or unreadable file is a one-line DataError."""

    def one(p: Path) -> str:
        try:
            return file_digest(p)
        except OSError as err:
            raise DataError(f"{where}: cannot read {p} ({err.strerror or err})") from None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, paths))


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _read_one(options: DecodeOptions) -> Callable[[Path], np.ndarray]:
    from medclass.io.images import read_image

    def read(path: Path) -> np.ndarray:
        return read_image(path, window=options.window, frame=options.frame, max_pixels=options.max_pixels)

    return read


def _fit(a: np.ndarray, size: int, colour: bool) -> np.ndarray:
    """One image to ``(C, size, size)`` uint8: grey or RGB as asked, resized bilinearly when needed."""
    from PIL import Image

    if colour and a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.shape[0] != size or a.shape[1] != size:
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
    return a.transpose(2, 0, 1) if colour else a[None]


def decode_stack(
    paths: Sequence[Path],
    options: DecodeOptions,
    *,
    where: str,
    digests: Sequence[str] | None = None,
    cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Decode image files into a ``(N, C, S, S)`` ``uint8`` tensor, through the on-disk cache.

    Images are grey (``C = 1``) unless any file is colour, then all are RGB (``C = 3``).

    Args:
        paths: The files, in output order.
        options: Size, windowing, frame and pixel limit.
        where: The dataset's name for error messages (a folder or manifest).
        digests: Precomputed :func:`file_digest` values of ``paths`` (computed when ``None``).
        cache: Read and write ``<cache>/decoded/``; ``False`` always decodes.
        progress: Show a progress bar while decoding (on a terminal only).

    Returns:
        The image stack.

    Raises:
        DataError: No files, or a file that cannot be read (naming it and the cause).
    """
    if not paths:
        raise DataError(f"{where}: no images found")
    digests = list(digests) if digests is not None else file_digests(paths, where=where)
    key = hashlib.sha1("\n".join([options.key(), *digests]).encode()).hexdigest()
    cached = cache_dir() / "decoded" / f"{key}.npy"
    if cache and cached.is_file():
        try:
            return torch.from_numpy(np.load(cached, allow_pickle=False))
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    read = _read_one(options)
    log.info("decoding %d images from %s", len(paths), where)
    try:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            it = pool.map(read, paths)
            if show_progress(progress):
                it = tqdm(it, total=len(paths), desc="decoding", unit="img", leave=False)
            arrays = list(it)
    except InvalidImageError as err:
        raise DataError(f"{where}: {err}") from None
    colour = any(a.ndim == 3 for a in arrays)
    size = options.image_size or arrays[0].shape[0]
    out = np.empty((len(arrays), 3 if colour else 1, size, size), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = _fit(a, size, colour)
    if cache:
        try:
            with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
                np.save(fh, out, allow_pickle=False)
        except OSError:
            pass  # a read-only or full cache only costs speed
    return torch.from_numpy(out)


def duplicate_rows(digests: Sequence[str], priority: Sequence[int] | None = None) -> np.ndarray:
    """Rows whose file bytes repeat an earlier kept row, to drop for an exact-duplicate-free dataset.

    Args:
        digests: ``(N,)`` content hashes.
        priority: Optional ``(N,)`` ranks; within a group of identical files the row with the lowest
            rank (then the lowest index) is kept, e.g. 0 for train so a copy in test is the one dropped.

    Returns:
        Sorted row indices to drop.
    """
    rank = np.zeros(len(digests), dtype=np.int64) if priority is None else np.asarray(priority)
    order = np.lexsort((np.arange(len(digests)), rank))
    seen: set[str] = set()
    drop = []
    for i in order:
        if digests[i] in seen:
            drop.append(i)
        else:
            seen.add(digests[i])
    return np.sort(np.asarray(drop, dtype=np.int64))
