"""Intensity windows: map a range of native values (e.g. Hounsfield units) onto 0..1.

A window ``(center, width)`` maps ``center - width/2`` to 0 and ``center + width/2`` to 1, linearly,
clipping outside: ``y = clip((x - center) / width + 0.5, 0, 1)`` (DICOM's ``LINEAR_EXACT``). The
window stored in a DICOM file is applied with the function the file names (DICOM ``LINEAR`` by
default, ``LINEAR_EXACT`` or ``SIGMOID``), also scaled to 0..1.
"""

from __future__ import annotations

import math

import numpy as np

from medclass.errors import ConfigError

#: CT windows as ``(center, width)`` in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "ct_lung": (-600.0, 1500.0),
    "ct_mediastinum": (50.0, 350.0),
    "ct_bone": (400.0, 1800.0),
    "ct_brain": (40.0, 80.0),
    "ct_abdomen": (40.0, 400.0),
}
#: Window modes that are not presets: the file's own window ("dicom": else min-max; "auto": else
#: none) and plain min-max scaling of the image's values.
WINDOW_MODES = ("dicom", "auto", "minmax")

Window = str | tuple[float, float] | None


def check_window(window: Window) -> str | tuple[float, float] | None:
    """Validate a window argument.

    Args:
        window: ``None``, a mode of :data:`WINDOW_MODES`, a name in :data:`WINDOW_PRESETS` or a
            ``(center, width)`` pair with a finite center and a positive width.

    Returns:
        The mode name, or the ``(center, width)`` floats (presets resolved), or None.

    Raises:
        ConfigError: An unknown name or a malformed pair.
    """
    if window is None or (isinstance(window, str) and window in WINDOW_MODES):
        return window
    if isinstance(window, str):
        if window in WINDOW_PRESETS:
            return WINDOW_PRESETS[window]
        choices = ", ".join([*WINDOW_MODES, *WINDOW_PRESETS])
        raise ConfigError(f"window {window!r}: unknown (choose one of {choices}, or a (center, width) pair)")
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(f"window {window!r}: expected a name or a (center, width) pair") from None
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise ConfigError(f"window {window!r}: center must be finite and width positive")
    return center, width


def apply_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """``clip((x - center) / width + 0.5, 0, 1)`` as ``float32``, any shape."""
    y = (np.asarray(x, dtype=np.float32) - np.float32(center)) * np.float32(1.0 / width) + np.float32(0.5)
    return np.clip(y, 0.0, 1.0, out=y)


def apply_dicom_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A DICOM VOI window (PS3.3 C.11.2.1.2) scaled to 0..1, as ``float32``.

    Args:
        x: Modality values, any shape.
        center: Window Center.
        width: Window Width (at least 1 for ``LINEAR``, positive otherwise).
        function: VOI LUT Function: ``LINEAR`` (default), ``LINEAR_EXACT`` or ``SIGMOID``.

    Raises:
        ValueError: A width the function does not allow, or an unknown function.
    """
    function = (function or "LINEAR").strip().upper()
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width {width} must be positive")
        return apply_window(x, center, width)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width {width} must be positive")
        z = (np.asarray(x, dtype=np.float32) - np.float32(center)) * np.float32(-4.0 / width)
        return (1.0 / (1.0 + np.exp(np.clip(z, -80.0, 80.0)))).astype(np.float32)
    if function != "LINEAR":
        raise ValueError(f"unknown VOI LUT function {function!r}")
    if width < 1:
        raise ValueError(f"window width {width} must be at least 1")
    if width == 1:  # a threshold at center - 0.5
        return (np.asarray(x, dtype=np.float32) > center - 0.5).astype(np.float32)
    y = (np.asarray(x, dtype=np.float32) - np.float32(center - 0.5)) * np.float32(1.0 / (width - 1)) + np.float32(0.5)
    return np.clip(y, 0.0, 1.0, out=y)


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to 0..1 by the finite minimum and maximum (a constant image gives zeros), as ``float32``."""
    a = np.asarray(x, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, dtype=np.float32)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # values near the float32 limits
        y = np.nan_to_num((a - np.float32(lo)) * np.float32(1.0 / (hi - lo)), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, 0.0, 1.0, out=y)
