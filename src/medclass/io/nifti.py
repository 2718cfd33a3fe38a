"""Read NIfTI-1/NIfTI-2 volumes (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pairs) with nibabel.

Axis convention: nibabel indexes voxels ``(i, j, k)`` (``X, Y, Z`` in the file's voxel order).
The array returned is that array with its axes reversed, ``(k, j, i)`` = ``(D, H, W)``: slice
``k`` is an ``(H, W)`` image whose rows run along ``j`` and columns along ``i``. No reorientation
is done; ``meta["axcodes"]`` gives the anatomical direction each array axis points to (e.g.
``("S", "A", "R")``) and ``meta["affine"]`` the voxel-to-world matrix in nibabel's ``(i, j, k)`` order.

The header is parsed first and the shape checked against the pixel limit before any voxel data is
read or decompressed (a gzipped file is decompressed only as far as its first volume ends); the
file's content (not its name) decides whether it is NIfTI-1 or -2 and whether it is gzipped.
"""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import InvalidImageError
from medclass.io.common import Frame, check_frame_arg, check_pixels, frame_index, image_errors
from medclass.io.types import ImageData

_MAX_DATA_OFFSET = 64 << 20  # bytes of header extensions before the voxels, at most


def _open_image(path: Path, head: bytes, fh: Any) -> Any:
    """A lazy nibabel image (header parsed, data not read) from an open stream."""
    import nibabel as nib

    if head[344:348] == b"ni1\x00":  # header and data in two files: nibabel finds the pair by name
        return nib.load(str(path), mmap=False)
    klass = nib.Nifti2Image if head[4:8] in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Image
    return klass.from_stream(fh)


def read_nifti(
    path: str | Path, *, frame: Frame = None, max_pixels: int | None = None, header_only: bool = False
) -> ImageData:
    """Read a NIfTI volume.

    Args:
        path: ``.nii``, ``.nii.gz`` or ``.hdr`` file (gzip is detected by content).
        frame: ``None`` for the whole volume, a slice index along ``k`` (``D``), or ``"middle"``.
        max_pixels: Sample limit; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.
        header_only: Parse the header only; ``array`` is None.

    Returns:
        ``float32`` ``(D, H, W)`` (or ``(H, W)`` for 2-D data, a single slice or a chosen ``frame``),
        scaled by the header's ``scl_slope``/``scl_inter``. A 4-D file gives its first volume
        (``meta["volumes"]`` says how many it holds). Metadata: ``format``, ``rows`` (H), ``columns``
        (W), ``frames`` (D), ``volumes``, ``spacing`` (voxel sizes per array axis, from the header's
        zooms), ``axcodes``, ``affine``, ``dtype``, ``bits``, ``frame``.

    Raises:
        InvalidImageError: Missing, corrupt or truncated file, unsupported data type or dimensions,
            or too many voxels.
        ConfigError: An invalid ``frame`` argument.
    """
    check_frame_arg(frame)
    path = Path(path)
    with image_errors(path):
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        if not gz:
            with open(path, "rb") as fh:
                head = fh.read(544)
                fh.seek(0)
                return _read(_open_image(path, head, fh), path, frame, max_pixels, header_only)
        with gzip.open(path, "rb") as fh:
            head = fh.read(544)
            cap = _gzip_bytes_needed(head, path, max_pixels, header_only)
            fh.seek(0)
            buf = io.BytesIO(fh.read(cap))
        return _read(_open_image(path, head, buf), path, frame, max_pixels, header_only)


def _gzip_bytes_needed(head: bytes, path: Path, max_pixels: int | None, header_only: bool) -> int:
    """How much of a gzipped file to decompress: the header, extensions and the first volume.

    The whole first volume is decompressed (gzip cannot seek to a slice), so its size is checked
    against the pixel limit here, before decompressing, whichever ``frame`` is asked for.
    """
    import nibabel as nib

    klass = nib.Nifti2Header if head[4:8] in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Header
    header = klass.from_fileobj(io.BytesIO(head), check=False)
    shape = tuple(int(s) for s in header.get_data_shape())
    offset = int(header.get_data_offset())
    if not 0 <= offset <= _MAX_DATA_OFFSET:
        raise InvalidImageError(f"{path}: implausible NIfTI data offset {offset}")
    if header_only:
        return offset
    count = math.prod(shape[:3]) if shape else 0
    check_pixels(path, count, max_pixels)
    return offset + count * header.get_data_dtype().itemsize


def _read(img: Any, path: Path, frame: Frame, max_pixels: int | None, header_only: bool) -> ImageData:
    import nibabel as nib

    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2 or min(shape) < 1:
        raise InvalidImageError(f"{path}: NIfTI data of shape {shape} is not an image")
    if len(shape) > 4 and max(shape[4:]) > 1:
        raise InvalidImageError(f"{path}: {len(shape)}-D NIfTI data {shape} is not supported (at most 4-D)")
    dtype = img.header.get_data_dtype()
    if dtype.names or dtype.kind not in "biuf":
        raise InvalidImageError(f"{path}: NIfTI data type {dtype} is not supported (grey numbers only)")
    depth = shape[2] if len(shape) >= 3 else 1
    zooms = [float(z) for z in img.header.get_zooms()[: min(len(shape), 3)]]
    try:
        codes = nib.aff2axcodes(img.affine)
    except Exception:  # a degenerate affine: no anatomical directions
        codes = None
    meta: dict[str, Any] = {
        "path": str(path),
        "format": "nifti",
        "rows": shape[1],
        "columns": shape[0],
        "frames": depth,
        "volumes": shape[3] if len(shape) >= 4 else 1,
        "samples": 1,
        "channels": 1,
        "dtype": str(dtype),
        "bits": 8 * dtype.itemsize if dtype.kind != "b" else 1,
        "windowed": False,
        "affine": None if img.affine is None else np.asarray(img.affine, dtype=float).tolist(),
        "frame": None,
    }
    index = frame_index(frame, depth, path)
    volume = depth > 1 and index is None
    meta["spacing"] = _spacing(zooms, volume=volume)
    meta["axcodes"] = None if codes is None else tuple(reversed(codes[:3] if volume else codes[:2]))
    if header_only:
        return ImageData(None, meta)
    check_pixels(path, shape[0] * shape[1] * (depth if volume else 1), max_pixels)
    slicer: list[Any] = [slice(None), slice(None)]
    if len(shape) >= 3:
        slicer.append(slice(None) if volume else (index or 0))
    slicer += [0] * max(len(shape) - 3, 0)
    data = np.asarray(img.dataobj[tuple(slicer)])
    arr = data.transpose(2, 1, 0) if data.ndim == 3 else data.T
    meta["frame"] = index
    return ImageData(np.ascontiguousarray(arr, dtype=np.float32), meta)


def _spacing(zooms: list[float], *, volume: bool) -> tuple[float, ...] | None:
    """Voxel sizes in array order: ``(dk, dj, di)`` for a volume, ``(dj, di)`` for an image."""
    sizes = zooms[:3] if volume else zooms[:2]
    if len(sizes) < (3 if volume else 2) or not all(np.isfinite(sizes)) or min(sizes) <= 0:
        return None
    return tuple(reversed(sizes))
