"""One entry point for every image format, and the conversion to ``uint8`` for training and display.

:func:`read` decides the format by content (:func:`medclass.io.sniff.detect_format`), never by the
file name alone: a ``.png`` that holds DICOM is read as DICOM. Only a ``.dcm``/``.dicom`` file whose
content matches no magic (a preamble-less dataset that starts unusually) is handed to pydicom on
the strength of its name, and must then parse as an image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclass.errors import InvalidImageError
from medclass.io.common import Frame, check_frame_arg, describe, frame_index
from medclass.io.sniff import detect_format
from medclass.io.types import ImageData
from medclass.io.window import Window, apply_window, check_window, minmax

_DICOM_SUFFIXES = (".dcm", ".dicom")
_RASTER = ("png", "jpeg", "tiff", "bmp")
#: Robust range of wide data for :func:`to_uint8_image`: these percentiles map to 0 and 255.
ROBUST_PERCENTILES = (0.5, 99.5)
_SAMPLE = 1_000_000  # percentiles are taken on at most about this many evenly spaced values


def read(
    path: str | Path,
    *,
    window: Window = None,
    frame: Frame = None,
    max_pixels: int | None = None,
    header_only: bool = False,
) -> ImageData:
    """Read any supported image file: DICOM, NIfTI, PNG, JPEG, TIFF, BMP or ``.npy``.

    Args:
        path: The file; its content decides the format.
        window: ``None`` (native values), ``"dicom"``, ``"auto"``, ``"minmax"``, a preset name of
            :data:`medclass.io.window.WINDOW_PRESETS` or a ``(center, width)`` pair; see
            :func:`medclass.io.dicom.read_dicom`. For other formats a preset or pair applies to the
            stored values, ``"dicom"`` and ``"minmax"`` scale by min-max and ``"auto"`` does nothing.
            Windowing applies to grey images only; windowed values are on 0..1.
        frame: ``None`` for every frame/slice, an index, or ``"middle"``.
        max_pixels: Sample limit; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.
        header_only: Read metadata only (``array`` is None); for DICOM the pixel data is not read.

    Returns:
        ``float32`` pixels and metadata (see :class:`ImageData`).

    Raises:
        InvalidImageError: ``"<path>: <cause>"`` for a missing, unrecognised, corrupt, truncated or
            too large file (nothing else escapes for bad files).
        ConfigError: An unknown window or an invalid ``frame`` argument.
    """
    spec = check_window(window)
    check_frame_arg(frame)
    path = Path(path)
    try:
        fmt = detect_format(path)
    except (FileNotFoundError, IsADirectoryError) as err:
        raise InvalidImageError(f"{path}: {describe(err)}") from None
    except OSError as err:
        raise InvalidImageError(f"{path}: cannot read ({err.strerror or err})") from None
    if fmt is None and path.name.lower().endswith(_DICOM_SUFFIXES):
        fmt = "dicom"
    if fmt == "dicom":
        from medclass.io.dicom import read_dicom

        return read_dicom(path, window=window, frame=frame, max_pixels=max_pixels, header_only=header_only)
    if fmt == "nifti":
        from medclass.io.nifti import read_nifti

        data = read_nifti(path, frame=frame, max_pixels=max_pixels, header_only=header_only)
    elif fmt in _RASTER:
        from medclass.io.raster import read_pil

        data = read_pil(path, frame=frame, max_pixels=max_pixels, header_only=header_only, fmt=fmt)
    elif fmt == "npy":
        from medclass.io.raster import read_npy

        data = read_npy(path, frame=frame, max_pixels=max_pixels, header_only=header_only)
    else:
        raise InvalidImageError(f"{path}: unrecognised image format")
    return _window_plain(data, spec)


def _window_plain(data: ImageData, spec: str | tuple[float, float] | None) -> ImageData:
    """Apply a window to a grey non-DICOM image (these files carry no window of their own)."""
    if data.array is None or data.meta.get("channels") != 1 or spec is None or spec == "auto":
        return data
    if isinstance(spec, tuple):
        data.array = apply_window(data.array, *spec)
        data.meta["window"] = spec
    else:  # "dicom" (no file window to use) and "minmax"
        data.array = minmax(data.array)
        data.meta["window"] = "minmax"
    data.meta["windowed"] = True
    return data


def to_uint8_image(data: ImageData, *, frame: Frame = "middle") -> np.ndarray:
    """Pixels of :func:`read` as ``uint8`` for training and display.

    Scaling, in order of precedence:

    * a ``uint8`` array (as :func:`medclass.io.images.read_image` gets from 8-bit PNG/JPEG): unchanged;
    * windowed data (0..1): ``round(255 * y)``;
    * 8-bit data (``meta["bits"] == 8``) whose values are within 0..255: unchanged;
    * anything else (16-bit, HU, float, 1-bit masks): the 0.5th and 99.5th percentiles map to 0
      and 255, clipping beyond (falling back to min and max when they are equal). Percentiles
      rather than min-max, because a few extreme values (metal, padding such as -3024 HU outside
      the CT field of view, hot pixels) would otherwise squash the whole image into a few grey
      levels. Colour uses one range for all three channels, which keeps hues.

    Args:
        data: From :func:`read` (not header-only).
        frame: For a volume, the frame/slice to return: an index or ``"middle"``; ``None`` keeps
            the whole volume (scaled with one range).

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` ``uint8`` (``(F, H, W[, 3])`` with ``frame=None``).

    Raises:
        InvalidImageError: No pixels (a header-only read) or the frame is out of range.
    """
    where = data.meta.get("path", "image")
    arr = data.array
    if arr is None:
        raise InvalidImageError(f"{where}: no pixel data (read with header_only)")
    if data.is_volume and frame is not None:
        index = frame_index(frame, arr.shape[0], where)
        arr = arr[0 if index is None else index]
    if arr.dtype == np.uint8:
        return arr
    if data.meta.get("windowed"):
        y = arr * np.float32(255.0)
    else:
        finite = arr[np.isfinite(arr)] if not np.isfinite(arr).all() else arr
        if finite.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        lo, hi = float(finite.min()), float(finite.max())
        if data.meta.get("bits") == 8 and lo >= 0 and hi <= 255 and finite is arr:  # the common, fast case
            return np.rint(arr).astype(np.uint8)
        if data.meta.get("bits") == 8 and lo >= 0 and hi <= 255:
            y = arr
        else:
            flat = finite.reshape(-1)
            sample = flat[:: max(1, flat.size // _SAMPLE)]
            plo, phi = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
            if phi > plo:
                lo, hi = plo, phi
            if hi <= lo:
                return np.zeros(arr.shape, dtype=np.uint8)
            y = (arr - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
