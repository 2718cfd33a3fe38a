"""Image files as ``uint8`` arrays for training and display.

:func:`read_image` reads every format :func:`medclass.io.read` knows (PNG, JPEG, TIFF, BMP, DICOM,
NIfTI, ``.npy``) and turns the result into ``uint8`` with :func:`medclass.io.reader.to_uint8_image`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclass.io.window import Window

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".nii", ".nii.gz", ".npy")


def is_image_file(path: str | Path) -> bool:
    """True for a known image suffix (case-insensitive), or a suffix-less file whose content is DICOM.

    DICOM files often have no suffix at all; only those (no dot in the name) are opened, so the
    test stays cheap on folders of ordinary files.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return True
    if path.suffix:
        return False
    from medclass.io.sniff import detect_format

    try:
        return path.is_file() and detect_format(path) == "dicom"
    except OSError:
        return False


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array to ``uint8``: 8-bit data as is, wider data min-max scaled to 0..255."""
    if array.dtype == np.uint8:
        return array
    a = array.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(
    path: str | Path,
    *,
    grey: bool | None = None,
    window: Window = None,
    frame: int | str | None = "middle",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read one image file of any supported format as ``uint8``.

    Args:
        path: Image file (PNG, JPEG, TIFF, BMP, DICOM, NIfTI or ``.npy``; judged by content).
        grey: Force grey (True) or RGB (False); ``None`` keeps grey images grey and colour colour,
            reading RGB images whose channels are all equal as grey.
        window: Intensity window. ``None`` uses a DICOM file's own window (VOI LUT or Window
            Center/Width) when it has one, and otherwise the scaling of
            :func:`~medclass.io.reader.to_uint8_image`; or a preset name (``ct_lung``, ...),
            ``"dicom"``, ``"minmax"`` or a ``(center, width)`` pair, as for :func:`medclass.io.read`.
        frame: Frame or slice of a multi-frame file or volume: an index or ``"middle"``; ``None``
            keeps every frame.
        max_pixels: Sample limit; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.

    Returns:
        ``(H, W)`` grey or ``(H, W, 3)`` RGB (with ``frame=None``: ``(F, H, W[, 3])`` for volumes).

    Raises:
        InvalidImageError: The file is missing, not an image, unreadable, truncated or too large.
        ConfigError: An unknown window or invalid frame argument.
    """
    from medclass.io.reader import read, to_uint8_image

    data = None
    if window is None:  # fast path for ordinary pictures: no float32 round trip for 8-bit pixels
        from medclass.io.sniff import detect_format

        try:
            fmt = detect_format(path)
        except OSError:
            fmt = None  # read() below says why
        if fmt in ("png", "jpeg", "tiff", "bmp"):
            from medclass.io.common import check_frame_arg
            from medclass.io.raster import read_pil

            check_frame_arg(frame)
            data = read_pil(path, frame=frame, max_pixels=max_pixels, fmt=fmt, native=True)
    if data is None:
        data = read(path, window="auto" if window is None else window, frame=frame, max_pixels=max_pixels)
    arr = to_uint8_image(data, frame=frame)
    colour = arr.shape[-1] == 3 and data.meta.get("channels") == 3
    if (
        colour
        and grey is None
        and np.array_equal(arr[..., 0], arr[..., 1])
        and np.array_equal(arr[..., 1], arr[..., 2])
    ):
        arr, colour = arr[..., 0], False
    if grey and colour:
        arr = np.round(arr @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    if grey is False and not colour:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr)
