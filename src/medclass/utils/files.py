"""Atomic file writes: a killed process never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` only if the block succeeds.

    Args:
        path: Final destination. Its folder is created if missing.

    Yields:
        A temporary file path in the same folder (same filesystem, so the rename is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = False) -> Path:
    """Write a file atomically through a callback that receives the open handle."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
        write(fh)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return atomic_write(path, lambda fh: fh.write(text))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically. NaN is written as ``NaN`` (JSON5/Python style)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) of writes that a killed process never finished."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed
