"""Fuzzing: mutated real files never make a reader raise anything but a medclass error, nor hang.

Real DICOM files (native, RLE, JPEG 2000, JPEG, JPEG-LS) and PNG/JPEG/NIfTI/npy files are mutated
(flipped bytes, truncation, inserted and deleted chunks, overwritten length fields) and read. The
examples are derandomised, so CI sees the same inputs every run.
"""

from __future__ import annotations

import gzip
import io
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medclass.errors import MedclassError
from medclass.io import read, read_image, to_uint8_image

TIME_LIMIT_S = 5.0
DICOM_SEEDS = [
    "pydicom/CT_small.dcm",
    "pydicom/MR_small_RLE.dcm",
    "pydicom/MR_small_jp2klossless.dcm",
    "pydicom/JPGExtended.dcm",
    "pydicom/MR_small_jpeg_ls_lossless.dcm",
    "pydicom/no_meta.dcm",
]
#: Length-like values that break parsers: zero, odd, just below/above 16 and 32 bits, undefined length.
NASTY = [0, 1, 0x7F, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]

_position = st.one_of(st.integers(0, 1024), st.integers(0, 1 << 24))
_mutation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _position, st.just(0)),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _position, st.integers(1, 256)),
    st.tuples(st.just("length"), _position, st.tuples(st.sampled_from(NASTY), st.sampled_from([2, 4]))),
)
_settings = settings(
    max_examples=18,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    """Apply ``mutations`` in order (positions are taken modulo the current length)."""
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= arg
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos : pos + arg]
        else:
            value, width = arg
            buf[pos : pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(buf)


def check_reads(path: Path, data: bytes, window: str | None, frame: str | None) -> None:
    """Read mutated bytes: a result or a MedclassError, within the time limit; nothing else."""
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        for header_only in (True, False):
            out = read(path, window=window, frame=frame, header_only=header_only)
            if out.array is not None:
                to_uint8_image(out)
        read_image(path, window=window)
    except MedclassError as err:
        assert str(err).startswith(f"{path}") or "window" in str(err) or "frame" in str(err), str(err)
        assert "\n" not in str(err)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f} s"


def _png() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.integers(0, 4096, (48, 40)) * 16).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _nifti_gz() -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(np.random.default_rng(2).normal(size=(12, 10, 8)).astype(np.float32), np.eye(4))
    return gzip.compress(img.to_bytes(), mtime=0)


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(3).integers(0, 1000, (6, 16, 16)).astype(np.int16))
    return buf.getvalue()


SYNTHETIC = {"png": _png, "jpeg": _jpeg, "nii.gz": _nifti_gz, "npy": _npy}
_options = st.tuples(st.sampled_from([None, "dicom", "ct_lung"]), st.sampled_from([None, "middle"]))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", DICOM_SEEDS)
def test_fuzz_dicom(name: str, shared_data: Path, work: Path) -> None:
    seed = (shared_data / "dicom" / name).read_bytes()
    target = work / f"{Path(name).stem}.dcm"

    @_settings
    @given(mutations=st.lists(_mutation, min_size=1, max_size=4), options=_options)
    def run(mutations: list[tuple], options: tuple[str | None, str | None]) -> None:
        check_reads(target, mutate(seed, mutations), *options)

    run()


@pytest.mark.parametrize("kind", sorted(SYNTHETIC))
def test_fuzz_other_formats(kind: str, work: Path) -> None:
    seed = SYNTHETIC[kind]()
    target = work / f"fuzz.{kind}"
    check_reads(target, seed, None, None)  # the unmutated seed reads

    @settings(_settings, max_examples=12)
    @given(mutations=st.lists(_mutation, min_size=1, max_size=4), options=_options)
    def run(mutations: list[tuple], options: tuple[str | None, str | None]) -> None:
        check_reads(target, mutate(seed, mutations), *options)

    run()


def test_rust_decoder_panic_is_an_invalid_image_error(shared_data: Path, tmp_path: Path) -> None:
    """Found by fuzzing: a chunk cut out of RLE data makes the Rust RLE decoder panic, and pyo3's
    PanicException derives from BaseException, not Exception."""
    seed = (shared_data / "dicom" / "pydicom" / "MR_small_RLE.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(seed[:7237] + seed[7237 + 229 :])
    with pytest.raises(MedclassError, match="cut.dcm: cannot decode"):
        read(path)
