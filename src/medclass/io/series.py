"""Assemble one DICOM series (single-frame slice files) into a volume ``(D, H, W)``.

Slices are ordered by their position along the slice normal: ``ImagePositionPatient`` projected on
the cross product of the row and column direction cosines of ``ImageOrientationPatient``. Without
positions they are ordered by ``InstanceNumber``, and without those by file name. Each slice keeps
its own modality LUT (PET and some CT slices rescale differently); a window is applied once, to the
whole volume, so every slice is scaled alike (``"dicom"``/``"auto"`` use the middle slice's window).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import InvalidImageError
from medclass.io.common import check_pixels
from medclass.io.dicom import Decoded, decode, finish
from medclass.io.sniff import detect_format
from medclass.io.types import ImageData
from medclass.io.window import Window, check_window

_SAME = ("series_uid", "rows", "columns", "channels", "photometric")


def _series_files(folder_or_paths: str | Path | Sequence[str | Path]) -> tuple[list[Path], str]:
    """The slice files and a name for messages (the folder, else the first file's folder)."""
    if isinstance(folder_or_paths, str | Path):
        root = Path(folder_or_paths)
        if root.is_dir():
            try:
                files = [p for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
                paths = [p for p in files if detect_format(p) == "dicom"]
            except OSError as err:
                raise InvalidImageError(f"{root}: cannot list the folder ({err.strerror or err})") from None
            if not paths:
                raise InvalidImageError(f"{root}: no DICOM files in the folder")
            return paths, str(root)
        if not root.exists():
            raise InvalidImageError(f"{root}: file not found")
        return [root], str(root)
    paths = [Path(p) for p in folder_or_paths]
    if not paths:
        raise InvalidImageError("read_series: no files given")
    return paths, str(paths[0].parent)


def _check_consistent(heads: list[dict[str, Any]], paths: list[Path], where: str) -> None:
    """Refuse files of several series, of different sizes or kinds, or with several frames each."""
    for key in _SAME:
        values = {h.get(key) for h in heads}
        if len(values) > 1:
            odd = next(p for p, h in zip(paths, heads) if h.get(key) != heads[0].get(key))
            what = "several series (SeriesInstanceUID)" if key == "series_uid" else f"different {key}"
            raise InvalidImageError(f"{where}: files of {what}, e.g. {paths[0].name} and {odd.name}")
    multi = next((p for p, h in zip(paths, heads) if h["frames"] > 1), None)
    if multi is not None:
        raise InvalidImageError(f"{where}: {multi.name} has several frames; read multi-frame files with read()")


def _order(heads: list[dict[str, Any]], where: str) -> tuple[list[int], np.ndarray | None, str]:
    """Slice order, the projected positions in that order (None without positions), and the rule used."""
    if all(h.get("position") and h.get("orientation") for h in heads):
        o = np.asarray(heads[0]["orientation"], dtype=np.float64)
        normal = np.cross(o[:3], o[3:])
        if np.linalg.norm(normal) > 1e-6:
            proj = np.asarray([h["position"] for h in heads], dtype=np.float64) @ normal
            order = [int(i) for i in np.argsort(proj, kind="stable")]
            steps = np.diff(proj[order])
            if len(steps) and np.min(steps) < 1e-4:
                raise InvalidImageError(f"{where}: several slices share one position (several echoes or time points?)")
            return order, proj[order], "position"
    numbers = [h.get("instance_number") for h in heads]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        return [int(i) for i in np.argsort(numbers, kind="stable")], None, "instance_number"
    return list(range(len(heads))), None, "path"


def read_series(
    folder_or_paths: str | Path | Sequence[str | Path],
    *,
    window: Window = None,
    max_pixels: int | None = None,
) -> ImageData:
    """Read one DICOM series into a volume.

    Args:
        folder_or_paths: A folder (every DICOM file directly in it, judged by content) or the files.
        window: As for :func:`medclass.io.dicom.read_dicom`, applied to the whole volume.
        max_pixels: Sample limit for the whole volume; ``None`` uses :data:`medclass.io.common.MAX_PIXELS`.

    Returns:
        ``float32`` volume ``(D, H, W)`` (``(D, H, W, 3)`` for colour) with the middle slice's metadata,
        except: ``frames`` (D), ``files`` (in slice order), ``order`` (``position``,
        ``instance_number`` or ``path``), ``positions`` (mm along the slice normal, or None),
        ``slice_spacing`` (median step of the positions, else the header's) and ``spacing``
        ``(slice, row, col)``.

    Raises:
        InvalidImageError: No files, unreadable files, several series, mismatched sizes, multi-frame
            files, duplicate slice positions, or a volume over the pixel limit.
        ConfigError: An unknown window.
    """
    spec = check_window(window)
    paths, where = _series_files(folder_or_paths)
    heads = [decode(p, header_only=True).meta for p in paths]
    _check_consistent(heads, paths, where)
    order, positions, rule = _order(heads, where)
    first = heads[0]
    check_pixels(where, len(paths) * first["rows"] * first["columns"] * first["channels"], max_pixels)
    shape = (len(paths), first["rows"], first["columns"]) + ((3,) if first["channels"] == 3 else ())
    volume = np.empty(shape, dtype=np.float32)
    middle: Decoded | None = None
    for k, i in enumerate(order):
        d = decode(paths[i], max_pixels=max_pixels)
        if d.array is None or d.array.shape != shape[1:]:
            got = None if d.array is None else d.array.shape
            raise InvalidImageError(f"{paths[i]}: pixel array of shape {got}, expected {shape[1:]} like the series")
        volume[k] = d.array
        if k == len(order) // 2:
            middle = d
    assert middle is not None
    meta = dict(middle.meta)
    slice_spacing = float(np.median(np.diff(positions))) if positions is not None and len(positions) > 1 else None
    meta.update(
        path=where,
        frames=len(paths),
        files=[str(paths[i]) for i in order],
        order=rule,
        positions=None if positions is None else [float(v) for v in positions],
        position=heads[order[0]].get("position"),
        slice_spacing=slice_spacing or meta.get("slice_spacing"),
        sop_uid=None,
        instance_number=None,
        frame=None,
    )
    ps = meta.get("pixel_spacing")
    meta["spacing"] = (meta["slice_spacing"], *ps) if ps and meta["slice_spacing"] else None
    return finish(Decoded(volume, meta, voi=middle.voi, value_range=middle.value_range), spec)
