"""Atomic file writes: a killed process never leaves a half-written file behind.

Every file medclass writes (``model.json``, weights, ``metrics.json``, prediction CSVs, reports,
downloads) goes through :func:`atomic_path`: a temporary file in the destination's folder, fsynced,
then renamed over the destination. The temporary file is created with mode ``0o666`` minus the
process umask, as ``open()`` creates a new file: with umask 022 every result is ``0o644``, readable
by colleagues (``tempfile.mkstemp`` would leave ``0o600``, the owner's only).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_TEMP_SUFFIX = ".tmp"


def _create_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """Create a new empty file ``.<name>.<random><suffix>`` beside ``path``; return its descriptor and path.

    Unlike :func:`tempfile.mkstemp` (always ``0o600``), the file is opened with mode ``0o666``, which
    the kernel reduces by the umask (or the folder's default ACL) exactly as for any new file: no need
    to read the umask, which cannot be read without changing it, a race with other threads.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = _TEMP_SUFFIX) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` only if the block succeeds.

    The temporary file exists (empty) when the block starts; writers may open it by name, truncating
    it, or replace it (safetensors writes its own ``0o600`` file and renames it there). Either way
    the result gets the mode the kernel gave the new empty file, ``0o666`` minus the umask, whatever
    ``path`` had before.

    Args:
        path: Final destination. Its folder is created if missing.
        suffix: Suffix of the temporary name (``.tmp``; :func:`remove_stale_temps` removes leftovers).

    Yields:
        A temporary file path in the same folder (same filesystem, so the rename is atomic). On an
        exception it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, suffix)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask: what the kernel gave a new file
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
            if stat.S_IMODE(os.fstat(fh.fileno()).st_mode) != mode:  # a writer that made its own file (safetensors)
                os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, suffix: str = _TEMP_SUFFIX) -> Iterator[IO[Any]]:
    """Open a temporary file for streaming writes; it replaces ``path`` when the block ends without error.

    Args:
        path: Final destination (see :func:`atomic_path`).
        mode: ``"wb"`` for bytes or ``"w"`` for UTF-8 text (newlines written as ``\\n`` on every platform).
        suffix: Suffix of the temporary name (``.part`` for downloads).

    Yields:
        The open file. An exception inside the block (a failed download, a checksum mismatch)
        removes the temporary file and leaves ``path`` untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, suffix=suffix) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as fh:
                yield fh
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                yield fh


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = False) -> Path:
    """Write a file atomically through a callback that receives the open handle (text: UTF-8)."""
    with atomic_open(path, "wb" if binary else "w") as fh:
        write(fh)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` line ends on every platform)."""
    return write_bytes(path, text.encode("utf-8"))


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
