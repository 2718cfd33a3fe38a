"""Readers for image files: DICOM, NIfTI, PNG/JPEG/TIFF/BMP and ``.npy``.

Names are loaded on first use, so ``import medclass.io`` costs nothing; pydicom, nibabel and
Pillow are imported only inside the reader that needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "read": "medclass.io.reader",
    "to_uint8_image": "medclass.io.reader",
    "read_series": "medclass.io.series",
    "detect_format": "medclass.io.sniff",
    "ImageData": "medclass.io.types",
    "WINDOW_PRESETS": "medclass.io.window",
    "read_image": "medclass.io.images",
    "is_image_file": "medclass.io.images",
    "read_dicom": "medclass.io.dicom",
    "read_nifti": "medclass.io.nifti",
}
__all__ = [
    "WINDOW_PRESETS",
    "ImageData",
    "detect_format",
    "is_image_file",
    "read",
    "read_dicom",
    "read_image",
    "read_nifti",
    "read_series",
    "to_uint8_image",
]

if TYPE_CHECKING:
    from medclass.io.dicom import read_dicom
    from medclass.io.images import is_image_file, read_image
    from medclass.io.nifti import read_nifti
    from medclass.io.reader import read, to_uint8_image
    from medclass.io.series import read_series
    from medclass.io.sniff import detect_format
    from medclass.io.types import ImageData
    from medclass.io.window import WINDOW_PRESETS


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
