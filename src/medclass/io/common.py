"""What every reader shares: the one pixel limit, one-line errors for third-party exceptions, frame choice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medclass.errors import ConfigError, InvalidImageError, MedclassError

Frame = int | str | None

#: The largest number of samples (rows x columns x frames x samples per pixel) any reader decodes,
#: unless a call passes its own ``max_pixels``. Read at call time, so assigning a new value here
#: reconfigures every reader. 100 M samples are 400 MB as ``float32``.
MAX_PIXELS = 100_000_000


def pixel_limit(max_pixels: int | None) -> int:
    """The limit to apply: ``max_pixels``, or :data:`MAX_PIXELS` when it is None."""
    return MAX_PIXELS if max_pixels is None else int(max_pixels)


def check_pixels(path: str | Path, count: int, max_pixels: int | None) -> None:
    """Refuse to decode an image of ``count`` samples when that exceeds the limit.

    Raises:
        InvalidImageError: ``count`` is larger than :func:`pixel_limit` of ``max_pixels``.
    """
    limit = pixel_limit(max_pixels)
    if count > limit:
        raise InvalidImageError(f"{path}: image of {count:,} samples exceeds the limit of {limit:,}")


def describe(err: BaseException) -> str:
    """A one-line cause for an exception raised by a third-party reader or decoder."""
    if isinstance(err, MemoryError):
        return "out of memory while decoding"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not a file"
    text = " ".join(str(err).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"cannot decode ({type(err).__name__}: {text})" if text else f"cannot decode ({type(err).__name__})"


@contextmanager
def image_errors(path: str | Path) -> Iterator[None]:
    """Let medclass errors through; turn any other exception into ``InvalidImageError("<path>: <cause>")``.

    Readers of untrusted files meet every exception type (``ValueError``, ``struct.error``,
    ``EOFError``, ``zlib.error``, ``MemoryError``, decoder-specific ones), and decoders written in
    Rust raise ``pyo3_runtime.PanicException``, which derives from ``BaseException``: so everything
    but interpreter exits and interrupts is caught. The original stays chained as ``__cause__``.
    """
    try:
        yield
    except (MedclassError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:
        raise InvalidImageError(f"{path}: {describe(err)}") from err


def check_frame_arg(frame: Frame) -> None:
    """Validate a ``frame`` argument: None, ``"middle"`` or an integer index.

    Raises:
        ConfigError: Anything else.
    """
    if frame is None or (isinstance(frame, str) and frame == "middle"):
        return
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise ConfigError(f"frame {frame!r}: expected a frame index, 'middle' or None")


def frame_index(frame: Frame, frames: int, path: str | Path) -> int | None:
    """The 0-based frame to take of ``frames``; None means all of them.

    A single frame needs no choice: ``"middle"``, 0 and -1 give None there. Negative indices
    count from the end.

    Raises:
        InvalidImageError: The index is out of range.
    """
    check_frame_arg(frame)
    if frame is None:
        return None
    if isinstance(frame, str):  # "middle"
        return frames // 2 if frames > 1 else None
    k = int(frame)
    if frames <= 1 and k in (0, -1):
        return None
    k = k + frames if k < 0 else k
    if not 0 <= k < frames:
        raise InvalidImageError(f"{path}: frame {frame} out of range ({frames} frame{'s' * (frames != 1)})")
    return k
