"""Fixtures for the image readers: a small DICOM writer (pydicom) for synthetic test files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    photometric: str | None = None,
    modality: str = "CT",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    bits_stored: int | None = None,
    part10: bool = True,
    implicit: bool = False,
    rows: int | None = None,
    columns: int | None = None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int | None = None,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    patient_id: str = "PAT-0042",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``pixels`` (``(H, W)``, ``(F, H, W)``, or ``(H, W, 3)`` RGB; uint8, uint16 or int16) as DICOM.

    ``part10=False`` writes the bare dataset: no preamble, no ``DICM``, no file meta group.
    ``rows``/``columns`` override the header (to claim a size the pixel data does not have).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    path = Path(path)
    pixels = np.asarray(pixels)
    rgb = pixels.ndim == 3 and pixels.shape[-1] == 3 and (photometric or "RGB") == "RGB"
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = patient_id
    ds.Modality = modality
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = series_uid
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    frames = pixels.shape[0] if (pixels.ndim == 3 and not rgb) or pixels.ndim == 4 else 1
    ds.Rows = rows or pixels.shape[-3 if rgb else -2]
    ds.Columns = columns or pixels.shape[-2 if rgb else -1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if rgb else "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if slope is not None or intercept is not None:
        ds.RescaleSlope = 1.0 if slope is None else slope
        ds.RescaleIntercept = 0.0 if intercept is None else intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    if part10:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.preamble = b"\x00" * 128
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=True)
    return path


@pytest.fixture(scope="session")
def make_dicom() -> Callable[..., Path]:
    """Factory ``make_dicom(path, pixels, **header)`` writing a synthetic DICOM file (see write_dicom)."""
    return write_dicom
