"""Read ordinary raster images (PNG, JPEG, TIFF, BMP) with Pillow and NumPy ``.npy`` arrays.

Values stay native: 8-bit images give 0..255, 16-bit PNG/TIFF give 0..65535 (``uint16`` read as
``float32``, not rescaled), 32-bit integer and float images their own values. Multi-page TIFFs (and
other multi-frame files) are volumes ``(F, H, W[, 3])``. Grey images with alpha lose the alpha;
palette and other colour modes become RGB. (Pillow reads 16-bit colour PNGs as 8-bit.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import InvalidImageError
from medclass.io.common import Frame, check_frame_arg, check_pixels, frame_index, image_errors
from medclass.io.types import ImageData

_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BITS = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


def _pixels(img: Any, native: bool) -> np.ndarray:
    """The current frame ``(H, W)`` or ``(H, W, 3)``, as ``float32`` or (``native``) Pillow's own dtype."""
    if img.mode in _WIDE_MODES or img.mode in ("L", "RGB"):  # no conversion needed
        arr = np.asarray(img)
    elif img.mode in _GREY_MODES:
        arr = np.asarray(img.convert("L"))
    else:
        arr = np.asarray(img.convert("RGB"))
    return arr if native else arr.astype(np.float32)


def read_pil(
    path: str | Path,
    *,
    frame: Frame = None,
    max_pixels: int | None = None,
    header_only: bool = False,
    fmt: str | None = None,
    native: bool = False,
) -> ImageData:
    """Read a PNG, JPEG, TIFF or BMP file.

    Args:
        path: The file.
        frame: ``None`` for every frame of a multi-frame file, an index, or ``"middle"``.
        max_pixels: Sample limit; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.
        header_only: Read the header only; ``array`` is None.
        fmt: The format name for ``meta["format"]`` (else Pillow's).
        native: Keep Pillow's dtype (``uint8`` for 8-bit images) instead of ``float32``: a fast path
            for :func:`medclass.io.images.read_image`, which wants ``uint8`` anyway.

    Returns:
        ``float32`` ``(H, W)``, ``(H, W, 3)`` or ``(F, H, W[, 3])``; metadata ``format``, ``rows``,
        ``columns``, ``frames``, ``samples``, ``channels``, ``bits``, ``mode``, ``frame``.

    Raises:
        InvalidImageError: Missing, not an image, truncated, corrupt or too large.
    """
    from PIL import Image

    check_frame_arg(frame)
    path = Path(path)
    with image_errors(path), Image.open(path) as img:
        width, height = img.size
        n = int(getattr(img, "n_frames", 1) or 1)
        channels = 1 if img.mode in _GREY_MODES or img.mode in _WIDE_MODES else 3
        meta: dict[str, Any] = {
            "path": str(path),
            "format": fmt or (img.format or "").lower(),
            "rows": height,
            "columns": width,
            "frames": n,
            "samples": len(img.getbands()),
            "channels": channels,
            "bits": _BITS.get(img.mode, 8),
            "mode": img.mode,
            "windowed": False,
            "spacing": None,
            "frame": None,
        }
        if header_only:
            return ImageData(None, meta)
        index = frame_index(frame, n, path)
        count = width * height * channels * (n if index is None else 1)
        check_pixels(path, count, max_pixels)
        arrays = []
        for k in range(n) if index is None else [index]:
            if n > 1:
                img.seek(k)
            arrays.append(_pixels(img, native))
        if any(a.shape != arrays[0].shape for a in arrays):
            raise InvalidImageError(f"{path}: frames of different sizes or modes")
        meta["frame"] = index
        arr = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        return ImageData(arr, meta)


def read_npy(
    path: str | Path, *, frame: Frame = None, max_pixels: int | None = None, header_only: bool = False
) -> ImageData:
    """Read a NumPy ``.npy`` image array (never unpickles; the header is checked before reading data).

    Accepted shapes: ``(H, W)``; ``(H, W, C)`` with C of 1, 3 or 4 (alpha dropped); ``(D, H, W)``
    for any other third axis; ``(D, H, W, C)`` with C of 1, 3 or 4. Numeric dtypes only.

    Args:
        path: The file.
        frame: ``None`` for the whole volume, an index along ``D``, or ``"middle"``.
        max_pixels: Sample limit; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.
        header_only: Read the header only; ``array`` is None.

    Returns:
        ``float32`` ``(H, W)``, ``(H, W, 3)``, ``(D, H, W)`` or ``(D, H, W, 3)``; metadata ``format``,
        ``rows``, ``columns``, ``frames``, ``samples``, ``channels``, ``bits``, ``dtype``, ``frame``.

    Raises:
        InvalidImageError: Not a readable ``.npy``, an object/structured/complex dtype, an
            unsupported shape, or too large.
    """
    check_frame_arg(frame)
    path = Path(path)
    with image_errors(path):
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
        try:
            return _npy(mm, path, frame, max_pixels, header_only)
        finally:
            del mm


def _npy(mm: np.ndarray, path: Path, frame: Frame, max_pixels: int | None, header_only: bool) -> ImageData:
    if mm.dtype.names or mm.dtype.kind not in "biuf":
        raise InvalidImageError(f"{path}: array of dtype {mm.dtype} is not an image (numbers only)")
    shape = mm.shape
    last = shape[-1] if shape else 0
    if len(shape) == 2 or (len(shape) == 3 and last not in (1, 3, 4)):
        samples, spatial = 1, shape
    elif len(shape) in (3, 4) and last in (1, 3, 4):
        samples, spatial = last, shape[:-1]
    else:
        raise InvalidImageError(f"{path}: array of shape {shape} is not an image (H,W), (H,W,C) or (D,H,W[,C])")
    if min(spatial) < 1:
        raise InvalidImageError(f"{path}: empty array of shape {shape}")
    depth = spatial[0] if len(spatial) == 3 else 1
    channels = 1 if samples == 1 else 3
    meta: dict[str, Any] = {
        "path": str(path),
        "format": "npy",
        "rows": spatial[-2],
        "columns": spatial[-1],
        "frames": depth,
        "samples": samples,
        "channels": channels,
        "bits": 1 if mm.dtype.kind == "b" else 8 * mm.dtype.itemsize,
        "dtype": str(mm.dtype),
        "windowed": False,
        "spacing": None,
        "frame": None,
    }
    if header_only:
        return ImageData(None, meta)
    index = frame_index(frame, depth, path) if len(spatial) == 3 else None
    check_pixels(path, spatial[-2] * spatial[-1] * channels * (depth if index is None else 1), max_pixels)
    arr = mm[index] if index is not None else mm
    if samples == 1 and len(shape) == len(spatial) + 1:
        arr = arr[..., 0]
    elif samples == 4:
        arr = arr[..., :3]
    if len(spatial) == 3 and depth == 1 and index is None:
        arr = arr[0]
    meta["frame"] = index
    return ImageData(np.array(arr, dtype=np.float32), meta)
