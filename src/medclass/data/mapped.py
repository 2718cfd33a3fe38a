"""Sets larger than memory: image files decoded into a memory-mapped ``.npy`` per split, read a batch at a time.

:func:`decode_mapped` writes the decoded stack straight into a ``.npy`` file in the cache, a chunk of files at a
time, and returns a read-only tensor over its mapping: indexing a batch reads those rows from the page cache.
:func:`release` drops the pages a pass has read from the process's resident set, so a pass over the whole set
holds a few batches in memory, not the set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medclass.data.decode import DecodeOptions, _fit, _read_one, _workers, file_digests
from medclass.data.download import cache_dir
from medclass.errors import DataError, InvalidImageError
from medclass.utils.files import atomic_path

log = logging.getLogger(__name__)

#: Decoded sets larger than this (bytes) are memory-mapped under ``data.mmap: auto``
#: (``MEDCLASS_MMAP_BYTES`` overrides it).
MMAP_BYTES = 1 << 30


_MAPPED: dict[int, weakref.ref] = {}  # id -> the tensors that :func:`decode_mapped` returned: file-backed


def release(images: torch.Tensor) -> None:
    """Let go of the pages of a memory-mapped stack this process has read (no-op for any other tensor).

    Pages read from a mapping stay in the process's resident set until the kernel needs them back; dropping
    them (``madvise(MADV_DONTNEED)``) after a batch keeps the resident memory of a pass over a large set at a
    few batches. The data stays in the page cache and is read again on the next access. Only tensors made by
    :func:`decode_mapped` are released: the same call on anonymous memory would discard it.
    """
    ref = _MAPPED.get(id(images))
    if ref is None or ref() is not images:
        return
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    start = images.data_ptr() // page * page
    end = (images.data_ptr() + images.numel() * images.element_size()) // page * page
    if end > start:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED


def mapped_size_limit() -> int:
    """The size above which ``data.mmap: auto`` maps a decoded split instead of holding it in memory."""
    return int(os.environ.get("MEDCLASS_MMAP_BYTES", MMAP_BYTES))


def decode_mapped(
    paths: Sequence[Path],
    options: DecodeOptions,
    *,
    where: str,
    digests: Sequence[str] | None = None,
    colour: bool | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """Decode image files into a memory-mapped ``(N, C, S, S)`` ``uint8`` stack: a ``.npy`` in the cache.

    The files are decoded ``chunk`` at a time straight into the file, so neither decoding nor training ever
    holds the whole stack in memory: the returned tensor reads its rows from the page cache when indexed.
    A stack decoded before (same files, same options) is mapped at once.

    Args:
        paths: The files, in output order.
        options: Size, windowing, frame and pixel limit (``image_size`` ``None``: the first image's size).
        where: The dataset's name for error messages.
        digests: Precomputed :func:`file_digest` values of ``paths``.
        colour: ``True`` for RGB, ``False`` for grey, ``None`` to decide from the files (RGB when any is).
        chunk: Files decoded at once.

    Returns:
        A read-only tensor backed by the mapped file.

    Raises:
        DataError: No files, or a file that cannot be read.
    """
    import warnings

    if not paths:
        raise DataError(f"{where}: no images found")
    digests = list(digests) if digests is not None else file_digests(paths, where=where)
    key = hashlib.sha1("\n".join([options.key(), f"mapped:{colour}", *digests]).encode()).hexdigest()
    cached = cache_dir() / "decoded" / f"{key}.npy"
    if not cached.is_file():
        _decode_into(cached, paths, options, where=where, colour=colour, chunk=chunk)
    array = np.load(cached, mmap_mode="r", allow_pickle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only by design: rows are copied when indexed
        images = torch.from_numpy(array)
    key = id(images)
    _MAPPED[key] = weakref.ref(images, lambda _ref: _MAPPED.pop(key, None))
    return images


class _Recolour(Exception):
    """A colour file came after grey ones were written: decode again, all RGB."""


def _decode_into(
    path: Path, paths: Sequence[Path], options: DecodeOptions, *, where: str, colour: bool | None, chunk: int
) -> None:
    """Write the decoded stack of ``paths`` to the ``.npy`` ``path``, ``chunk`` files at a time (atomically)."""
    read = _read_one(options)
    log.info("decoding %d images from %s into a memory-mapped cache", len(paths), where)
    try:
        with ThreadPoolExecutor(max_workers=_workers()) as pool, atomic_path(path) as tmp:
            out, size, rgb = None, 0, bool(colour)
            for start in range(0, len(paths), chunk):
                try:
                    arrays = list(pool.map(read, paths[start : start + chunk]))
                except InvalidImageError as err:
                    raise DataError(f"{where}: {err}") from None
                if out is None:
                    size = options.image_size or arrays[0].shape[0]
                    rgb = colour if colour is not None else any(a.ndim == 3 for a in arrays)
                    shape = (len(paths), 3 if rgb else 1, size, size)
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                if not rgb and any(a.ndim == 3 for a in arrays):
                    raise _Recolour
                for i, a in enumerate(arrays):
                    out[start + i] = _fit(a, size, rgb)
            out.flush()
            del out
    except _Recolour:
        _decode_into(path, paths, options, where=where, colour=True, chunk=chunk)
