"""Synthetic files for every reader: format sniffing, windows, MONOCHROME1, 16-bit, NIfTI axes, limits, errors."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.errors import ConfigError, InvalidImageError
from medclass.io import WINDOW_PRESETS, ImageData, detect_format, read, read_image, read_series, to_uint8_image
from medclass.io.codecs import declared_size, sniff_codec
from medclass.io.images import is_image_file, to_uint8

MakeDicom = Callable[..., Path]
#: HU test values and their images under the ct_lung window (-600, 1500): clip((x + 600) / 1500 + 0.5).
HU = np.array([[-1350, -1000, -600, 0], [150, 400, 1000, -2000]], dtype=np.int16)
LUNG = np.array([[0.0, 0.5 - 400 / 1500, 0.5, 0.9], [1.0, 1.0, 1.0, 0.0]])


def _nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (0.5, 0.7, 2.0)) -> Path:
    import nibabel as nib

    affine = np.diag([*zooms[:3], 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# ------------------------------------------------------------------------------------------ sniffing


def test_detect_format_by_content(tmp_path: Path, make_dicom: MakeDicom) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    files = {}
    for fmt, suffix in (("png", ".png"), ("jpeg", ".jpg"), ("tiff", ".tif"), ("bmp", ".bmp")):
        files[fmt] = tmp_path / f"x{suffix}"
        Image.fromarray(grey).save(files[fmt])
    files["npy"] = tmp_path / "x.npy"
    np.save(files["npy"], grey)
    files["nifti"] = _nifti(tmp_path / "x.nii", np.zeros((4, 5, 6), np.int16))
    files["nifti.gz"] = _nifti(tmp_path / "x.nii.gz", np.zeros((4, 5, 6), np.int16))
    files["dicom"] = make_dicom(tmp_path / "x.dcm", grey)
    files["dicom-bare"] = make_dicom(tmp_path / "bare.dcm", grey, part10=False)
    files["dicom-bare-implicit"] = make_dicom(tmp_path / "bare-implicit", grey, part10=False, implicit=True)
    files["dicom-as-png"] = make_dicom(tmp_path / "dicom.png", grey, part10=False)
    files["dicom-no-suffix"] = make_dicom(tmp_path / "IM0001", grey)
    for name, path in files.items():
        assert detect_format(path) == name.split("-")[0].split(".")[0], name
    assert (tmp_path / "bare.dcm").read_bytes()[:2] == b"\x08\x00"  # really no preamble

    (tmp_path / "text.png").write_text("not an image at all, just some text\n" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "noise").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for name in ("text.png", "empty.dcm", "noise"):
        assert detect_format(tmp_path / name) is None, name
    with pytest.raises(OSError):
        detect_format(tmp_path / "missing.png")


def test_misleading_suffix_reads_as_dicom(tmp_path: Path, make_dicom: MakeDicom) -> None:
    px = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    for name in ("dicom.png", "IM0001"):
        path = make_dicom(tmp_path / name, px, part10=name == "IM0001", modality="MR")
        data = read(path)
        assert data.meta["format"] == "dicom" and data.meta["modality"] == "MR"
        assert data.array is not None and np.array_equal(data.array, px)


def test_is_image_file(tmp_path: Path, make_dicom: MakeDicom) -> None:
    for name in ("a.PNG", "b.jpeg", "c.TIFF", "d.dcm", "e.nii", "f.nii.gz", "g.npy", "h.bmp"):
        assert is_image_file(tmp_path / name), name  # by suffix: the file need not exist
    assert not is_image_file(tmp_path / "notes.txt")
    assert not is_image_file(tmp_path / "archive.gz")
    make_dicom(tmp_path / "IM0001", np.zeros((4, 4), np.uint8), part10=False)
    (tmp_path / "README").write_text("hello")
    assert is_image_file(tmp_path / "IM0001")
    assert not is_image_file(tmp_path / "README")
    assert not is_image_file(tmp_path / "missing")


def test_sniff_codec_magic() -> None:
    assert sniff_codec(b"\xff\x4f\xff\x51" + bytes(60)) == "1.2.840.10008.1.2.4.91"
    assert sniff_codec(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(60)) == "1.2.840.10008.1.2.4.91"
    sof = b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff%c\x00\x02"
    assert sniff_codec(sof % 0xC0) == "1.2.840.10008.1.2.4.50"
    assert sniff_codec(sof % 0xC1) == "1.2.840.10008.1.2.4.51"
    sos = b"\xff\xda\x00\x08\x01\x01\x00%c\x00\x00"
    assert sniff_codec(sof % 0xC3 + sos % 1) == "1.2.840.10008.1.2.4.70"
    assert sniff_codec(sof % 0xC3 + sos % 6) == "1.2.840.10008.1.2.4.57"
    assert sniff_codec(sof % 0xF7 + sos % 0) == "1.2.840.10008.1.2.4.80"
    assert sniff_codec(sof % 0xF7 + sos % 3) == "1.2.840.10008.1.2.4.81"
    assert sniff_codec((1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(60)) == "1.2.840.10008.1.2.5"
    assert sniff_codec(b"garbage" * 20) is None


def test_declared_size_of_codestreams() -> None:
    sof = b"\xff\xd8\xff\xc0\x00\x0b\x08" + (300).to_bytes(2, "big") + (200).to_bytes(2, "big") + b"\x03"
    assert declared_size(sof) == (300, 200, 3)
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + b"".join(v.to_bytes(4, "big") for v in (640, 480, 0, 0, 640, 480, 0, 0))
    assert declared_size(siz + (1).to_bytes(2, "big") + bytes(8)) == (480, 640, 1)
    assert declared_size(b"\x00" * 100) is None


def test_bare_rle_dataset_without_file_meta(tmp_path: Path, make_dicom: MakeDicom) -> None:
    import pydicom
    from pydicom.uid import RLELossless

    px = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 13) % 4096
    src = make_dicom(tmp_path / "src.dcm", px, modality="MR")
    ds = pydicom.dcmread(src)
    ds.compress(RLELossless)
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "bare", ds, implicit_vr=False, little_endian=True)
    data = read(tmp_path / "bare")
    assert data.meta["transfer_syntax"] == RLELossless
    assert data.array is not None and np.array_equal(data.array, px)


# ------------------------------------------------------------------------------------------ windows


@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_window_presets_numerics(tmp_path: Path, make_dicom: MakeDicom, slope: float) -> None:
    stored = np.round((HU + 1024) / slope).astype(np.int16)
    path = make_dicom(tmp_path / "ct.dcm", stored, slope=slope, intercept=-1024, window=(40, 400))
    raw = read(path)
    assert raw.array is not None and raw.array.dtype == np.float32
    np.testing.assert_allclose(raw.array, HU, atol=1e-3)
    assert raw.meta["windowed"] is False and raw.meta["patient_id"] == "PAT-0042"
    assert "Doe" not in repr(raw.meta)  # the patient's name is never read into metadata

    lung = read(path, window="ct_lung")
    assert lung.meta["windowed"] is True
    np.testing.assert_allclose(lung.array, LUNG, atol=1e-6)
    for name, (c, w) in WINDOW_PRESETS.items():
        got = read(path, window=name).array
        np.testing.assert_allclose(got, np.clip((HU - c) / w + 0.5, 0, 1), atol=1e-6, err_msg=name)
    # brain (40, 80): 0 HU -> 0, 40 HU -> 0.5, 80 HU -> 1
    assert read(path, window="ct_brain").array[0, 3] == pytest.approx(0.0)
    np.testing.assert_allclose(read(path, window=(40.0, 80.0)).array, read(path, window="ct_brain").array)
    # the file's own window (40, 400) with DICOM's LINEAR function: ((x - 39.5) / 399 + 0.5), clipped
    own = read(path, window="dicom")
    np.testing.assert_allclose(own.array, np.clip((HU - 39.5) / 399 + 0.5, 0, 1), atol=1e-6)
    assert own.meta["window"] == "dicom" and own.meta["window_center"] == 40.0
    assert np.array_equal(read(path, window="auto").array, own.array)
    mm = read(path, window="minmax").array
    assert mm.min() == 0 and mm.max() == 1
    np.testing.assert_allclose(mm, (HU + 2000) / 3000, atol=1e-6)


def test_file_window_functions_and_fallbacks(tmp_path: Path, make_dicom: MakeDicom) -> None:
    x = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    exact = make_dicom(tmp_path / "exact.dcm", x, window=(150, 200), voi_function="LINEAR_EXACT")
    np.testing.assert_allclose(read(exact, window="dicom").array, [[0.0, 0.25, 0.75, 1.0]], atol=1e-6)
    sig = make_dicom(tmp_path / "sigmoid.dcm", x, window=(150, 200), voi_function="SIGMOID")
    want = 1 / (1 + np.exp(-4 * (x.astype(float) - 150) / 200))
    np.testing.assert_allclose(read(sig, window="dicom").array, want, atol=1e-6)
    plain = make_dicom(tmp_path / "none.dcm", x)
    np.testing.assert_allclose(read(plain, window="dicom").array, x / 300, atol=1e-6)  # min-max fallback
    assert np.array_equal(read(plain, window="auto").array, x)  # no window of its own: unchanged
    broken = make_dicom(tmp_path / "broken.dcm", x, window=(150, 0))  # width 0: ignored, not fatal
    assert read(broken, window="dicom").meta["window"] == "minmax"


def test_window_argument_errors(tmp_path: Path, make_dicom: MakeDicom) -> None:
    path = make_dicom(tmp_path / "ct.dcm", HU)
    for bad in ("lung", (0, 0), (1, 2, 3), ("a", 1), (float("nan"), 10)):
        with pytest.raises(ConfigError):
            read(path, window=bad)
    with pytest.raises(ConfigError):
        read(path, frame="first")
    with pytest.raises(ConfigError):
        read(path, frame=True)
    with pytest.raises(InvalidImageError, match="frame 3 out of range"):
        read(path, frame=3)


def test_colour_is_never_windowed(tmp_path: Path, make_dicom: MakeDicom) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    data = read(make_dicom(tmp_path / "rgb.dcm", rgb, modality="XC"), window="ct_lung")
    assert data.meta["windowed"] is False and data.meta["channels"] == 3
    assert data.array is not None and np.array_equal(data.array, rgb)


# ------------------------------------------------------------------------------------ MONOCHROME1


def test_monochrome1_inverted(tmp_path: Path, make_dicom: MakeDicom) -> None:
    stored = np.array([[0, 1000, 3000, 4095]], dtype=np.uint16)
    path = make_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1", bits_stored=12, modality="CR")
    data = read(path)
    assert data.meta["photometric"] == "MONOCHROME1" and data.meta["inverted"] is True
    np.testing.assert_array_equal(data.array, 4095 - stored)  # x' = lo + hi - x over the 12-bit range
    mm = read(path, window="minmax").array
    np.testing.assert_allclose(mm, 1 - stored / 4095, atol=1e-6)
    win = read(path, window=(2048, 4096)).array  # windowed on the stored values, then 1 - y
    np.testing.assert_allclose(win, 1 - np.clip((stored.astype(float) - 2048) / 4096 + 0.5, 0, 1), atol=1e-6)
    u8 = to_uint8_image(read(path, window="minmax"))
    assert u8[0, 0] == 255 and u8[0, -1] == 0  # stored 0 (dense in MONOCHROME1) is bright

    rescaled = make_dicom(
        tmp_path / "cr2.dcm", stored, photometric="MONOCHROME1", bits_stored=12, slope=2.0, intercept=-100.0
    )
    np.testing.assert_allclose(read(rescaled).array, (-100.0 + 8090.0) - (2.0 * stored - 100.0))

    mono2 = read(make_dicom(tmp_path / "m2.dcm", stored, bits_stored=12))
    assert mono2.meta["inverted"] is False and np.array_equal(mono2.array, stored)


# ------------------------------------------------------------------------------- multi-frame, series


def test_multiframe_frames(tmp_path: Path, make_dicom: MakeDicom) -> None:
    vol = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
    path = make_dicom(tmp_path / "mf.dcm", vol, modality="MR")
    assert read(path).array.shape == (5, 4, 6)
    assert np.array_equal(read(path, frame=1).array, vol[1])
    assert np.array_equal(read(path, frame=-1).array, vol[4])
    assert np.array_equal(read(path, frame="middle").array, vol[2])
    data = read(path)
    assert data.is_volume
    assert np.array_equal(to_uint8_image(data, frame=0), to_uint8_image(read(path, frame=0)))
    assert to_uint8_image(data, frame=None).shape == (5, 4, 6)
    assert read_image(path).shape == (4, 6)


def _slices(tmp_path: Path, make_dicom: MakeDicom, n: int = 5, **kw: object) -> list[Path]:
    """Axial slices written in scrambled file order; slice k has value 100 k and z = -10 + 2.5 k."""
    paths = []
    for k in (3, 0, 4, 1, 2)[:n]:
        px = np.full((6, 7), 100 * k, dtype=np.int16)
        header = dict(
            position=(0.0, 0.0, -10 + 2.5 * k),
            orientation=(1, 0, 0, 0, 1, 0),
            instance=k + 1,
            pixel_spacing=(0.8, 0.9),
            slope=1.0,
            intercept=-1024.0,
        )
        header.update(kw)
        paths.append(make_dicom(tmp_path / f"slice_{(k * 7) % 5}.dcm", px, **header))
    return paths


def test_read_series_orders_by_position(tmp_path: Path, make_dicom: MakeDicom) -> None:
    _slices(tmp_path, make_dicom)
    (tmp_path / "notes.txt").write_text("not dicom")
    data = read_series(tmp_path)
    assert data.array is not None and data.array.shape == (5, 6, 7)
    assert [float(v) for v in data.array[:, 0, 0]] == [100 * k - 1024 for k in range(5)]
    assert data.meta["positions"] == [-10.0, -7.5, -5.0, -2.5, 0.0]
    assert data.meta["spacing"] == (2.5, 0.8, 0.9)
    assert data.meta["order"] == "position"
    lung = read_series(tmp_path, window="ct_lung").array
    np.testing.assert_allclose(lung[:, 0, 0], np.clip((np.arange(5) * 100 - 1024 + 600) / 1500 + 0.5, 0, 1))


def test_read_series_falls_back_to_instance_number(tmp_path: Path, make_dicom: MakeDicom) -> None:
    paths = _slices(tmp_path, make_dicom, position=None, orientation=None)
    data = read_series(paths)
    assert data.meta["order"] == "instance_number"
    assert [float(v) for v in data.array[:, 0, 0]] == [100 * k - 1024 for k in range(5)]


def test_read_series_refuses_mixed_input(tmp_path: Path, make_dicom: MakeDicom) -> None:
    (tmp_path / "a").mkdir()
    paths = _slices(tmp_path / "a", make_dicom, n=3)
    other = make_dicom(tmp_path / "other.dcm", np.zeros((6, 7), np.int16), series_uid="1.2.3.999")
    with pytest.raises(InvalidImageError, match="several series"):
        read_series([*paths, other])
    small = make_dicom(tmp_path / "small.dcm", np.zeros((3, 7), np.int16))
    with pytest.raises(InvalidImageError, match="different rows"):
        read_series([*paths, small])
    with pytest.raises(InvalidImageError, match="no DICOM files"):
        read_series(_empty(tmp_path))
    with pytest.raises(InvalidImageError, match="limit"):
        read_series(paths, max_pixels=6 * 7 * 2)


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "x.txt").write_text("x")
    return folder


# --------------------------------------------------------------------------- PNG, TIFF, npy, NIfTI


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_keeps_values(tmp_path: Path, suffix: str) -> None:
    px = np.array([[0, 1, 1000], [4095, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(px).save(path)
    data = read(path)
    assert data.meta["bits"] == 16 and data.meta["channels"] == 1
    assert data.array is not None and data.array.dtype == np.float32
    np.testing.assert_array_equal(data.array, px)


def test_pillow_modes(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    for name in ("rgb.png", "rgba.png"):
        d = read(tmp_path / name)
        assert d.meta["channels"] == 3 and np.array_equal(d.array, rgb)
    d = read(tmp_path / "la.png")
    assert d.meta["channels"] == 1 and np.array_equal(d.array, rgb[..., 0])
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    vol = read(tmp_path / "pages.tif")
    assert vol.array.shape == (3, 4, 4) and list(vol.array[:, 0, 0]) == [10, 20, 30]
    assert read(tmp_path / "pages.tif", frame="middle").array[0, 0] == 20


def test_npy(tmp_path: Path) -> None:
    cases = {
        "grey": (np.arange(12, dtype=np.int16).reshape(3, 4), (3, 4)),
        "rgb": (np.zeros((3, 4, 3), np.uint8), (3, 4, 3)),
        "rgba": (np.zeros((3, 4, 4), np.uint8), (3, 4, 3)),
        "single": (np.zeros((3, 4, 1), np.float64), (3, 4)),
        "volume": (np.zeros((5, 3, 6), np.float32), (5, 3, 6)),
    }
    for name, (arr, shape) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        d = read(tmp_path / f"{name}.npy")
        assert d.array.shape == shape and d.array.dtype == np.float32, name
    assert np.array_equal(read(tmp_path / "grey.npy").array, cases["grey"][0])
    assert read(tmp_path / "volume.npy", frame="middle").array.shape == (3, 6)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "vector.npy", np.zeros(10))
    np.save(tmp_path / "complex.npy", np.zeros((3, 4), np.complex64))
    for name in ("objects", "vector", "complex"):
        with pytest.raises(InvalidImageError, match=f"{name}.npy"):
            read(tmp_path / f"{name}.npy")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_axes_and_spacing(tmp_path: Path, suffix: str) -> None:
    data = np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32)  # (X, Y, Z) = (i, j, k)
    path = _nifti(tmp_path / f"vol{suffix}", data)
    d = read(path)
    assert d.meta["format"] == "nifti"
    assert d.array.shape == (6, 5, 4)  # (D, H, W) = (k, j, i)
    for i, j, k in ((0, 0, 0), (3, 1, 5), (2, 4, 1)):
        assert d.array[k, j, i] == data[i, j, k]
    assert d.meta["spacing"] == pytest.approx((2.0, 0.7, 0.5))
    assert (d.meta["rows"], d.meta["columns"], d.meta["frames"]) == (5, 4, 6)
    assert d.meta["axcodes"] == ("S", "A", "R")
    mid = read(path, frame="middle")
    np.testing.assert_array_equal(mid.array, data[:, :, 3].T)
    assert mid.meta["spacing"] == pytest.approx((0.7, 0.5))
    head = read(path, header_only=True)
    assert head.array is None and head.meta["frames"] == 6
    # the content decides, not the name
    renamed = tmp_path / "renamed.dat"
    renamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read(renamed).array, d.array)


def test_nifti_4d_and_2d(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 2, dtype=np.int16).reshape(2, 3, 4, 2)
    d = read(_nifti(tmp_path / "t.nii.gz", data))
    assert d.meta["volumes"] == 2 and d.array.shape == (4, 3, 2)
    np.testing.assert_array_equal(d.array, data[..., 0].transpose(2, 1, 0))
    flat = read(_nifti(tmp_path / "flat.nii", np.arange(6, dtype=np.uint8).reshape(2, 3, 1)))
    assert flat.array.shape == (3, 2)


# ---------------------------------------------------------------------------- limits and bad files


def test_max_pixels_checked_before_decoding(
    tmp_path: Path, make_dicom: MakeDicom, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydicom.pixels.decoders.base import Decoder

    huge = make_dicom(tmp_path / "huge.dcm", np.zeros((4, 4), np.uint16), rows=50000, columns=50000)
    called = []
    monkeypatch.setattr(Decoder, "as_array", lambda *a, **k: called.append(1))
    with pytest.raises(InvalidImageError, match=r"huge\.dcm: image of 2,500,000,000 samples exceeds the limit"):
        read(huge)
    assert not called
    assert read(huge, header_only=True).meta["rows"] == 50000  # the header alone is fine
    monkeypatch.undo()

    small = make_dicom(tmp_path / "small.dcm", np.zeros((10, 10), np.uint16))
    with pytest.raises(InvalidImageError, match="exceeds the limit of 99"):
        read(small, max_pixels=99)
    assert read(small, max_pixels=100).array.shape == (10, 10)
    monkeypatch.setattr("medclass.io.common.MAX_PIXELS", 50)  # the one module-wide setting
    with pytest.raises(InvalidImageError, match="limit of 50"):
        read(small)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "x.png")
    np.save(tmp_path / "x.npy", np.zeros((10, 10)))
    _nifti(tmp_path / "x.nii.gz", np.zeros((10, 10, 1), np.uint8))
    for name in ("x.png", "x.npy", "x.nii.gz"):
        with pytest.raises(InvalidImageError, match="limit of 50"):
            read(tmp_path / name)
        with pytest.raises(InvalidImageError, match="limit of 50"):
            read_image(tmp_path / name)


def test_nifti_header_bomb(tmp_path: Path) -> None:
    """A gzipped header claiming 30000^3 voxels is refused before anything is decompressed."""
    path = _nifti(tmp_path / "small.nii", np.zeros((2, 2, 2), np.uint8))
    raw = bytearray(path.read_bytes())
    raw[42:48] = np.array([30000, 30000, 30000], "<i2").tobytes()  # dim[1..3]
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        read(bomb)


def test_codestream_bomb_refused_before_decoding(tmp_path: Path, make_dicom: MakeDicom) -> None:
    """A JPEG 2000 frame whose SIZ marker claims 60000 x 60000 pixels never reaches the decoder."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    px = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    path = make_dicom(tmp_path / "j2k.dcm", px, bits_stored=12, modality="MR")
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    ds.save_as(path)
    assert np.array_equal(read(path).array, px)
    raw = bytearray(path.read_bytes())
    siz = raw.find(b"\xff\x4f\xff\x51") + 2
    raw[siz + 6 : siz + 14] = (60000).to_bytes(4, "big") * 2  # Xsiz, Ysiz
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidImageError, match="declares 60000x60000x1 samples"):
        read(path)


def test_deflated_dicom_inflates_with_a_bound(tmp_path: Path, make_dicom: MakeDicom) -> None:
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    px = np.arange(100, dtype=np.uint16).reshape(10, 10)
    path = make_dicom(tmp_path / "deflated.dcm", px, extra={"ImageComments": "x" * 64})
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    data = read(path)
    assert np.array_equal(data.array, px) and data.meta["modality"] == "CT"
    ds.add_new(0x00091010, "OB", bytes(4 << 20))  # 4 MiB of zeros deflate to a few KiB
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 64 << 10
    with pytest.raises(InvalidImageError, match="deflated dataset expands beyond"):
        read(path, max_pixels=1000)


def test_missing_or_unsupported_decoder(tmp_path: Path, make_dicom: MakeDicom, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom
    from pydicom.pixels.decoders.base import Decoder
    from pydicom.uid import RLELossless

    path = make_dicom(tmp_path / "rle.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(InvalidImageError, match=r"rle.dcm: no decoder installed for RLE Lossless \("):
        read(path)
    monkeypatch.undo()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: pydicom has no decoder at all
    ds.save_as(path)
    with pytest.raises(InvalidImageError, match="rle.dcm: pixel data in MPEG2 .* cannot be decoded"):
        read(path)


def test_bad_files_raise_invalid_image_error(tmp_path: Path, make_dicom: MakeDicom) -> None:
    dcm = make_dicom(tmp_path / "ct.dcm", np.arange(400, dtype=np.int16).reshape(20, 20))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "x.jpg")
    _nifti(tmp_path / "x.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32))
    for name in ("ct.dcm", "x.png", "x.jpg", "x.nii.gz"):
        src = tmp_path / name
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(src.read_bytes()[: len(src.read_bytes()) * 2 // 3])
        with pytest.raises(InvalidImageError, match=f"^{cut}: "):
            read(cut)
    assert dcm.is_file()
    nopix = make_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint8))
    import pydicom

    ds = pydicom.dcmread(nopix)
    del ds.PixelData
    ds.save_as(nopix)
    with pytest.raises(InvalidImageError, match="nopix.dcm: no pixel data"):
        read(nopix)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InvalidImageError, match="text.png: unrecognised image format"):
        read(tmp_path / "text.png")
    (tmp_path / "text.dcm").write_text("hello, not DICOM")
    with pytest.raises(InvalidImageError, match="text.dcm"):
        read(tmp_path / "text.dcm")
    with pytest.raises(InvalidImageError, match="missing.dcm: file not found"):
        read(tmp_path / "missing.dcm")
    with pytest.raises(InvalidImageError, match="folder"):
        read(tmp_path)
    with pytest.raises(InvalidImageError, match="header_only"):
        to_uint8_image(read(dcm, header_only=True))


# ------------------------------------------------------------------------------- uint8 conversion


def test_to_uint8_image_rules() -> None:
    windowed = ImageData(np.array([[0.0, 0.5, 1.0]], np.float32), {"windowed": True, "channels": 1})
    assert to_uint8_image(windowed).tolist() == [[0, 128, 255]]
    eight = ImageData(np.array([[3.0, 100.0, 200.0]], np.float32), {"bits": 8, "channels": 1})
    assert to_uint8_image(eight).tolist() == [[3, 100, 200]]  # 8-bit data is not stretched
    # wide data: percentiles 0.5/99.5, so one extreme pixel does not squash the rest
    rng = np.random.default_rng(0)
    ct = rng.uniform(-100, 100, (100, 100)).astype(np.float32)
    ct[0, 0] = 30000
    u = to_uint8_image(ImageData(ct, {"bits": 16, "channels": 1}))
    assert u[0, 0] == 255 and u.std() > 60  # plain min-max would put everything near 0
    const = ImageData(np.full((3, 3), 7.0, np.float32), {"bits": 16, "channels": 1})
    assert to_uint8_image(const).max() == 0
    nan = ImageData(np.array([[np.nan, 0.0, 10.0]], np.float32), {"bits": 32, "channels": 1})
    assert to_uint8_image(nan).tolist() == [[0, 0, 255]]
    vol = ImageData(
        np.stack([np.full((2, 2), v, np.float32) for v in (0.0, 0.5, 1.0)]), {"windowed": True, "channels": 1}
    )
    assert to_uint8_image(vol).tolist() == [[128, 128], [128, 128]]
    assert to_uint8_image(vol, frame=-1).max() == 255


def test_read_image_compat(tmp_path: Path, make_dicom: MakeDicom) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "g.png"), grey)
    assert read_image(tmp_path / "g.png", grey=False).shape == (8, 8, 3)
    rgb = np.stack([grey, grey, grey], -1)
    Image.fromarray(rgb).save(tmp_path / "rgb_grey.png")
    assert read_image(tmp_path / "rgb_grey.png").shape == (8, 8)  # equal channels read as grey
    colour = np.stack([grey, 255 - grey, grey // 2], -1)
    Image.fromarray(colour).save(tmp_path / "c.png")
    assert np.array_equal(read_image(tmp_path / "c.png"), colour)
    assert read_image(tmp_path / "c.png", grey=True).shape == (8, 8)
    # DICOM through read_image: the file's own window by default, presets on request
    ct = make_dicom(tmp_path / "ct.dcm", HU + 1024, slope=1.0, intercept=-1024.0, window=(-600, 1500))
    assert read_image(ct).dtype == np.uint8
    lung = np.round(LUNG * 255).astype(np.uint8)
    np.testing.assert_allclose(read_image(ct, window="ct_lung"), lung, atol=1)
    np.testing.assert_allclose(read_image(ct), np.round(np.clip((HU + 600.5) / 1499 + 0.5, 0, 1) * 255), atol=1)
    assert to_uint8(np.array([[0, 2, 4]], np.uint16)).tolist() == [[0, 128, 255]]
    # the uint8 fast path for ordinary pictures gives what the general path gives
    wide = np.random.default_rng(3).integers(0, 4096, (20, 30)).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    for name in ("g.png", "c.png", "wide.png"):
        assert np.array_equal(read_image(tmp_path / name), to_uint8_image(read(tmp_path / name))), name


def test_import_is_light() -> None:
    code = (
        "import sys, medclass.io, medclass.io.images, medclass.io.sniff; "
        "medclass.io.is_image_file('x.png'); "
        "print(sorted(m for m in ('pydicom', 'nibabel', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
