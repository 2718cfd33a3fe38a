"""Read ordinary image files (PNG, JPEG, TIFF, BMP) and NumPy arrays into ``uint8`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclass.errors import InvalidImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 50_000_000


def is_image_file(path: Path) -> bool:
    """True when the suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array to ``uint8``: 8-bit data as is, wider data min-max scaled to 0..255."""
    if array.dtype == np.uint8:
        return array
    a = array.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | Path, *, grey: bool | None = None) -> np.ndarray:
    """Read one image file as ``uint8``, shaped ``(H, W)`` for grey or ``(H, W, 3)`` for colour.

    Args:
        path: Image file.
        grey: Force grey (True) or RGB (False); ``None`` keeps grey images grey and colour colour,
            reading RGB files whose channels are all equal as grey.

    Returns:
        The pixel array.

    Raises:
        InvalidImageError: The file is missing, unreadable, truncated or too large.
    """
    from PIL import Image

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = to_uint8(np.asarray(img))
            elif img.mode in ("L", "1", "P", "LA") and grey is not False:
                arr = np.asarray(img.convert("L"))
            else:
                arr = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise InvalidImageError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        raise InvalidImageError(f"{path}: image larger than {MAX_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InvalidImageError(f"{path}: cannot decode image ({err})") from None
    if (
        arr.ndim == 3
        and grey is None
        and np.array_equal(arr[..., 0], arr[..., 1])
        and np.array_equal(arr[..., 1], arr[..., 2])
    ):
        arr = arr[..., 0]
    if grey and arr.ndim == 3:
        arr = np.round(arr @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    if grey is False and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr)
