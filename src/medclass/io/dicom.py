"""Read DICOM files with pydicom: pixels in modality units (Hounsfield units for CT), windows, colour.

Decoding steps, in order:

1. Parse with ``pydicom.dcmread(force=True)``. A file without preamble or file meta is accepted
   (also after a few stray leading bytes); its transfer syntax is inferred from how pydicom parsed
   it (implicit/explicit VR, endianness) and, for encapsulated pixel data, from the first
   fragment's magic bytes (:mod:`medclass.io.codecs`). Deflated files are inflated with a bound.
2. Check Rows x Columns x frames x samples against the pixel limit, and every compressed frame's
   own declared size against Rows x Columns, before any decoding (decompression bombs).
3. Decode (the requested frame only, when one is asked for). YCbCr colour is converted to RGB,
   PALETTE COLOR is looked up to RGB on 0..255.
4. Grey images: apply the modality LUT (Rescale Slope/Intercept, also from the functional groups
   of enhanced multi-frame files, or the Modality LUT Sequence), giving ``float32``.
5. Window (optional, grey only; see :mod:`medclass.io.window`): the result is on 0..1.
6. MONOCHROME1 is inverted so that bright always means dense: unwindowed values become
   ``lo + hi - x``, where ``lo..hi`` is the modality range of the stored bits (so values stay in the
   same range); windowed values become ``1 - y``. Windows always apply to the values as the file
   stores them, which is also what a file's own Window Center/Width refers to.

Every failure is an :class:`~medclass.errors.InvalidImageError` ``"<path>: <cause>"``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import InvalidImageError
from medclass.io.codecs import declared_size, fragments, sniff_codec
from medclass.io.common import Frame, check_frame_arg, check_pixels, frame_index, image_errors, pixel_limit
from medclass.io.sniff import detect_format, dicom_offset, element_header
from medclass.io.types import ImageData
from medclass.io.window import WINDOW_PRESETS, Window, apply_dicom_window, apply_window, check_window, minmax

__all__ = ["WINDOW_PRESETS", "read_dicom"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_NATIVE = {  # (implicit VR, little endian) -> transfer syntax
    (True, True): "1.2.840.10008.1.2",
    (False, True): "1.2.840.10008.1.2.1",
    (False, False): "1.2.840.10008.1.2.2",
}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_META_SLACK = 1 << 20  # bytes allowed for the non-pixel elements of an inflated dataset


@dataclass
class Decoded:
    """One decoded DICOM file before windowing and MONOCHROME1 inversion (see :func:`finish`).

    Attributes:
        array: Grey modality values (MONOCHROME1 not yet inverted) ``(H, W)`` or ``(F, H, W)``, or
            RGB ``(H, W, 3)`` / ``(F, H, W, 3)``, ``float32``; None for a header-only read.
        meta: The :class:`ImageData` metadata.
        voi: The file's own window as a map from modality values to 0..1, or None.
        value_range: Modality values of the lowest and highest stored value, or None.
    """

    array: np.ndarray | None
    meta: dict[str, Any]
    voi: Callable[[np.ndarray], np.ndarray] | None = None
    value_range: tuple[float, float] | None = None


def read_dicom(
    path: str | Path,
    *,
    window: Window = None,
    frame: Frame = None,
    max_pixels: int | None = None,
    header_only: bool = False,
) -> ImageData:
    """Read one DICOM file.

    Args:
        path: The file (any name; content need not have a preamble or file meta).
        window: ``None``: no window, modality values (e.g. HU). ``"dicom"``: the file's VOI LUT or
            Window Center/Width, else min-max. ``"auto"``: the file's window, else none.
            ``"minmax"``: the image's range. A :data:`WINDOW_PRESETS` name or a ``(center, width)``
            pair: that window. Windowed output is ``float32`` on 0..1; colour images are never windowed.
        frame: ``None`` for every frame (``(F, H, W[, 3])`` when the file has several), an index
            (negative counts from the end), or ``"middle"``.
        max_pixels: Sample limit (rows x columns x decoded frames x output channels); ``None`` uses
            :data:`medclass.io.common.MAX_PIXELS`.
        header_only: Read the header only (fast; pixel data is not even read): ``array`` is None.

    Returns:
        ``float32`` pixels ``(H, W)``, ``(H, W, 3)``, ``(F, H, W)`` or ``(F, H, W, 3)``, and metadata:
        ``format``, ``modality``, ``body_part``, ``view_position``, ``patient_id`` (raw: hash it
        before writing it anywhere), ``study_uid``, ``series_uid``, ``sop_uid``, ``instance_number``,
        ``rows``, ``columns``, ``frames``, ``samples``, ``bits_stored``, ``photometric`` (as stored),
        ``inverted``, ``pixel_spacing`` (row, column) mm, ``slice_spacing``, ``spacing`` (per array
        axis), ``orientation`` (6 floats), ``position`` (3 floats), ``transfer_syntax``,
        ``window_center``/``window_width`` (the file's first window), ``windowed``, ``frame``.

    Raises:
        InvalidImageError: Missing, not DICOM, truncated, corrupt, no pixel data, no decoder, too large.
        ConfigError: An unknown window or an invalid ``frame`` argument.
    """
    spec = check_window(window)
    path = Path(path)
    return finish(decode(path, frame=frame, max_pixels=max_pixels, header_only=header_only), spec)


def decode(path: Path, *, frame: Frame = None, max_pixels: int | None = None, header_only: bool = False) -> Decoded:
    """Parse and decode one file (steps 1-4 of the module notes); errors become InvalidImageError."""
    check_frame_arg(frame)
    with image_errors(path):  # pydicom, the decoder plugins and numpy raise many types; MemoryError too
        ds = _load(path, header_only, max_pixels)
        meta = header_meta(ds, path)
        if header_only:
            return Decoded(None, meta)
        return _decode_pixels(ds, path, meta, frame, max_pixels)


# ----------------------------------------------------------------------------------------- parsing


def _load(path: Path, header_only: bool, max_pixels: int | None) -> Any:
    """Parse the file with pydicom, tolerating a missing preamble/file meta and a few stray leading bytes."""
    import pydicom

    if not path.is_file():
        raise InvalidImageError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    fmt = detect_format(path)
    if fmt not in ("dicom", None):
        raise InvalidImageError(f"{path}: not a DICOM file (content is {fmt.upper()})")
    with open(path, "rb") as fh:
        part10 = fh.read(132)[128:132] == b"DICM"
    if part10:
        meta = pydicom.filereader.read_file_meta_info(path)
        if meta.get("TransferSyntaxUID") == _DEFLATED:
            return _read_deflated(path, meta, header_only, max_pixels)
    offset = 0 if part10 else dicom_offset(path) or 0
    src: Any = path
    if offset:  # bytes before the first element: parse from the element
        src = io.BytesIO(path.read_bytes()[offset:])
    ds = pydicom.dcmread(src, force=True, stop_before_pixels=header_only)
    if not part10 and fmt is None and not any(k in ds for k in ("Rows", "SOPClassUID", "Modality", *_PIXEL_KEYWORDS)):
        raise InvalidImageError(f"{path}: not a DICOM file")
    return ds


def _read_deflated(path: Path, meta: Any, header_only: bool, max_pixels: int | None) -> Any:
    """A Deflated Explicit VR Little Endian file, inflated with a bound (pydicom's own inflation has none).

    The dataset may expand to 8 bytes per allowed sample plus 1 MiB; beyond that it is refused as a
    decompression bomb before it is held in memory.
    """
    import zlib

    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    raw = path.read_bytes()
    pos = 132
    while raw[pos : pos + 2] == b"\x02\x00":  # skip the file meta group (explicit VR little endian)
        element = element_header(raw, pos, explicit=True)
        if element is None:
            raise InvalidImageError(f"{path}: corrupt file meta group")
        pos = element[2]
    cap = 8 * pixel_limit(max_pixels) + _META_SLACK
    body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw[pos:], cap + 1)
    if len(body) > cap:
        raise InvalidImageError(f"{path}: deflated dataset expands beyond {cap:,} bytes (pixel limit)")
    ds = pydicom.dcmread(io.BytesIO(body), force=True, stop_before_pixels=header_only)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the inflated body; pixel data is native
    ds.file_meta = meta
    return ds


def _first(value: Any) -> Any:
    """The first value of a multi-valued element (``None`` and empty stay None)."""
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _int(value: Any, default: int | None = None) -> int | None:
    value = _first(value)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    """Exactly ``n`` finite floats, or None."""
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str) else [value]))
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _positive(value: Any, n: int) -> tuple[float, ...] | None:
    """Exactly ``n`` positive finite floats (a spacing), or None."""
    out = _floats(value, n)
    return out if out and min(out) > 0 else None


def _text(ds: Any, keyword: str) -> str | None:
    value = _first(ds.get(keyword))
    return None if value is None else str(value).strip() or None


def group_value(ds: Any, keyword: str, sequence: str, index: int | None = None) -> Any:
    """An attribute from the dataset, else from the shared or per-frame functional groups.

    Enhanced multi-frame files keep e.g. Pixel Spacing in ``SharedFunctionalGroupsSequence[0].
    PixelMeasuresSequence[0]`` and positions in ``PerFrameFunctionalGroupsSequence[i].
    PlanePositionSequence[0]``.
    """
    if keyword in ds:
        return ds.get(keyword)
    for groups, i in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", index or 0)):
        seq = ds.get(groups)
        if seq and len(seq) > i:
            inner = seq[i].get(sequence)
            if inner and keyword in inner[0]:
                return inner[0].get(keyword)
    return None


def header_meta(ds: Any, path: Path) -> dict[str, Any]:
    """The :class:`ImageData` metadata of a parsed dataset (no pixel data needed)."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    spp = _int(ds.get("SamplesPerPixel"), 1)
    bits = _int(ds.get("BitsStored"), _int(ds.get("BitsAllocated")))
    pixel_spacing = _positive(group_value(ds, "PixelSpacing", "PixelMeasuresSequence"), 2) or _positive(
        ds.get("ImagerPixelSpacing"), 2
    )
    between = _positive(group_value(ds, "SpacingBetweenSlices", "PixelMeasuresSequence"), 1)
    thickness = _positive(group_value(ds, "SliceThickness", "PixelMeasuresSequence"), 1)
    photometric = _text(ds, "PhotometricInterpretation") or ("MONOCHROME2" if spp == 1 else "RGB")
    meta: dict[str, Any] = {
        "path": str(path),
        "format": "dicom",
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined"),
        "view_position": _text(ds, "ViewPosition"),
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "instance_number": _int(ds.get("InstanceNumber")),
        "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "frames": max(_int(ds.get("NumberOfFrames"), 1) or 1, 1),
        "samples": spp,
        "channels": 3 if spp == 3 or photometric == "PALETTE COLOR" else 1,
        "bits_stored": bits,
        "bits": 8 if photometric == "PALETTE COLOR" else bits,
        "photometric": photometric,
        "inverted": False,
        "windowed": False,
        "pixel_spacing": pixel_spacing,
        "slice_thickness": thickness[0] if thickness else None,
        "slice_spacing": (between or thickness or (None,))[0],
        "orientation": _floats(group_value(ds, "ImageOrientationPatient", "PlaneOrientationSequence"), 6),
        "position": _floats(group_value(ds, "ImagePositionPatient", "PlanePositionSequence"), 3),
        "transfer_syntax": str(tsyntax) if tsyntax else None,
        "window_center": _floats(_first(group_value(ds, "WindowCenter", "FrameVOILUTSequence")), 1),
        "window_width": _floats(_first(group_value(ds, "WindowWidth", "FrameVOILUTSequence")), 1),
        "frame": None,
    }
    for key in ("window_center", "window_width"):
        meta[key] = meta[key][0] if meta[key] else None
    meta["spacing"] = _spacing(meta, volume=meta["frames"] > 1)
    return meta


def _spacing(meta: dict[str, Any], *, volume: bool) -> tuple[float, ...] | None:
    """Spacing per array axis: ``(row, col)`` for an image, ``(slice, row, col)`` for a volume."""
    ps = meta.get("pixel_spacing")
    if not ps:
        return None
    if not volume:
        return tuple(ps)
    return (meta["slice_spacing"], *ps) if meta.get("slice_spacing") else None


# ------------------------------------------------------------------------------- transfer syntax


def _ensure_transfer_syntax(ds: Any, path: Path) -> str:
    """The dataset's transfer syntax; inferred and set in ``file_meta`` when the file has none."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        ds.file_meta = file_meta = FileMetaDataset()
    tsyntax = file_meta.get("TransferSyntaxUID")
    if tsyntax:
        return str(tsyntax)
    implicit, little = ds.original_encoding
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    elem = ds[keyword]
    if elem.is_undefined_length:
        uid = sniff_codec(next(fragments(elem.value), b""))
        if uid is None:
            raise InvalidImageError(f"{path}: no file meta and the compressed pixel data's codec is not recognised")
    else:
        uid = _NATIVE.get((bool(implicit), bool(little)))
        if uid is None:
            raise InvalidImageError(f"{path}: no file meta and an unsupported encoding (implicit VR big endian)")
    file_meta.TransferSyntaxUID = UID(uid)
    return uid


# ---------------------------------------------------------------------------------------- pixels


def _decode_pixels(ds: Any, path: Path, meta: dict[str, Any], frame: Frame, max_pixels: int | None) -> Decoded:
    from pydicom.pixels.utils import as_pixel_options

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise InvalidImageError(f"{path}: no pixel data")
    rows, cols, frames, spp = meta["rows"], meta["columns"], meta["frames"], meta["samples"]
    if not rows or not cols or rows < 0 or cols < 0 or not spp or spp < 0:
        raise InvalidImageError(f"{path}: missing or invalid Rows/Columns/Samples per Pixel")
    index = frame_index(frame, frames, path)
    check_pixels(path, rows * cols * (1 if index is not None else frames) * max(spp, meta["channels"]), max_pixels)
    tsyntax = _ensure_transfer_syntax(ds, path)
    meta["transfer_syntax"] = tsyntax
    _check_codestreams(ds, path, rows * cols * spp)
    decoder = _decoder(tsyntax, path)
    arr, props = decoder.as_array(ds, index=index, validate=True, as_rgb=True, **as_pixel_options(ds))
    meta["frame"] = index
    photometric = str(props.get("photometric_interpretation", meta["photometric"]))
    if meta["photometric"] == "PALETTE COLOR":
        return Decoded(_palette(arr, ds), meta)
    if spp == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return Decoded(arr.astype(np.float32, copy=False), meta)
    if spp != 1:
        raise InvalidImageError(f"{path}: {spp} samples per pixel is not supported (1 or 3)")
    x, transform = _modality(arr, ds, index)
    lo_hi = _value_range(ds, transform, meta)
    return Decoded(x, meta, voi=_voi(ds), value_range=lo_hi)


def _decoder(tsyntax: str, path: Path) -> Any:
    """pydicom's decoder for a transfer syntax, with a clear error when none is implemented or installed."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    name = UID(tsyntax).name
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise InvalidImageError(f"{path}: pixel data in {name} cannot be decoded (not supported)") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)  # e.g. "pylibjpeg - requires ..."
        raise InvalidImageError(f"{path}: no decoder installed for {name} ({missing})")
    return decoder


def _check_codestreams(ds: Any, path: Path, frame_samples: int) -> None:
    """Refuse compressed frames whose own header declares more samples than a frame of Rows x Columns.

    Decoders allocate what the codestream declares, so a small fragment claiming a huge image would
    otherwise be a decompression bomb that the Rows/Columns check cannot see.
    """
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    elem = ds[keyword]
    if not elem.is_undefined_length:
        return
    for fragment in fragments(elem.value):
        size = declared_size(fragment)
        if size is not None and size[0] * size[1] * max(size[2], 1) > frame_samples:
            raise InvalidImageError(
                f"{path}: a compressed frame declares {size[0]}x{size[1]}x{size[2]} samples, "
                f"more than Rows x Columns x Samples per Pixel ({frame_samples:,})"
            )


def _palette(arr: np.ndarray, ds: Any) -> np.ndarray:
    """PALETTE COLOR indices to RGB on 0..255 (16-bit tables are scaled down)."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(arr, ds)
    out = rgb.astype(np.float32)
    if rgb.dtype.itemsize > 1 and rgb.size and rgb.max() > 255:
        out *= np.float32(255.0 / 65535.0)
    return out


def _modality(arr: np.ndarray, ds: Any, index: int | None) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Apply the modality LUT; returns ``float32`` values and the transform itself (for the value range)."""
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        def lut(a: np.ndarray) -> np.ndarray:
            return apply_modality_lut(np.asarray(a).astype(np.int64), ds).astype(np.float32)

        return lut(arr), lut
    multi = index is None and (_int(ds.get("NumberOfFrames"), 1) or 1) > 1 and arr.ndim == 3
    frames = range(arr.shape[0]) if multi else [index]
    pairs = [_rescale(ds, i) for i in frames]
    x = arr.astype(np.float32)
    if len(set(pairs)) == 1:
        slope, intercept = pairs[0]
        if slope != 1.0:
            x *= np.float32(slope)
        if intercept != 0.0:
            x += np.float32(intercept)
    else:  # per-frame rescale (enhanced multi-frame)
        for i, (slope, intercept) in enumerate(pairs):
            x[i] = x[i] * np.float32(slope) + np.float32(intercept)
    slope, intercept = pairs[0]
    return x, lambda a: np.asarray(a, dtype=np.float32) * np.float32(slope) + np.float32(intercept)


def _rescale(ds: Any, index: int | None) -> tuple[float, float]:
    """Rescale Slope and Intercept of a frame (dataset, else functional groups); (1, 0) when absent."""
    slope = _floats(_first(group_value(ds, "RescaleSlope", "PixelValueTransformationSequence", index)), 1)
    intercept = _floats(_first(group_value(ds, "RescaleIntercept", "PixelValueTransformationSequence", index)), 1)
    return (slope[0] if slope and slope[0] != 0 else 1.0), (intercept[0] if intercept else 0.0)


def _value_range(ds: Any, transform: Callable[[np.ndarray], np.ndarray], meta: dict[str, Any]) -> tuple[float, float]:
    """Modality values of the smallest and largest value the stored bits can hold."""
    bits = meta["bits_stored"] or 16
    bits = min(max(bits, 1), 32)
    signed = _int(ds.get("PixelRepresentation"), 0) == 1
    stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1], dtype=np.int64)
    lo, hi = (float(v) for v in transform(stored))
    return (lo, hi) if lo <= hi else (hi, lo)


def _voi(ds: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The file's own VOI (VOI LUT Sequence, else Window Center/Width) mapping values to 0..1, or None."""
    seq = ds.get("VOILUTSequence")
    if seq and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]:
        from pydicom.pixels.processing import apply_voi

        desc = [int(v) for v in seq[0].LUTDescriptor]
        n = desc[0] or 65536
        table = apply_voi(np.arange(desc[1], desc[1] + n, dtype=np.int64), ds)
        lo, hi = float(table.min()), float(table.max())
        if hi > lo:

            def lut(x: np.ndarray) -> np.ndarray:
                y = apply_voi(np.rint(x).astype(np.int64), ds).astype(np.float32)
                return np.clip((y - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)

            return lut
    center = _floats(_first(group_value(ds, "WindowCenter", "FrameVOILUTSequence")), 1)
    width = _floats(_first(group_value(ds, "WindowWidth", "FrameVOILUTSequence")), 1)
    function = _text(ds, "VOILUTFunction") or "LINEAR"
    if not center or not width:
        return None
    c, w = center[0], width[0]
    try:
        apply_dicom_window(np.zeros(1, dtype=np.float32), c, w, function)
    except ValueError:  # a malformed window in the file is ignored, not fatal
        return None
    return lambda x: apply_dicom_window(x, c, w, function)


# ---------------------------------------------------------------------------------------- finish


def finish(decoded: Decoded, spec: str | tuple[float, float] | None) -> ImageData:
    """Window grey pixels and invert MONOCHROME1 (steps 5-6 of the module notes).

    Args:
        decoded: From :func:`decode` (or a stack of them, for a series).
        spec: A window checked by :func:`medclass.io.window.check_window`.
    """
    meta = dict(decoded.meta)
    x = decoded.array
    if x is None or meta["channels"] != 1:
        return ImageData(x, meta)
    y: np.ndarray | None = None
    if isinstance(spec, tuple):
        y = apply_window(x, *spec)
        meta["window"] = spec
    elif spec == "minmax" or (spec == "dicom" and decoded.voi is None):
        y = minmax(x)
        meta["window"] = "minmax"
    elif spec in ("dicom", "auto") and decoded.voi is not None:
        y = decoded.voi(x)
        meta["window"] = "dicom"
    if y is not None:
        x = y
        meta["windowed"] = True
    if meta["photometric"] == "MONOCHROME1":
        if meta["windowed"]:
            x = np.subtract(np.float32(1.0), x, dtype=np.float32)
        else:
            lo, hi = decoded.value_range or (float(np.nanmin(x)), float(np.nanmax(x)))
            x = np.subtract(np.float32(lo + hi), x, dtype=np.float32)
        meta["inverted"] = True
    return ImageData(np.ascontiguousarray(x, dtype=np.float32), meta)
