"""Find a catalog dataset file on disk, or download it into the cache.

Where :func:`resolve` looks, in order:

1. ``$MEDCLASS_DATA_DIR/<filename>``, if the variable is set: a read-only offline mirror, used as is
   (a wrong file there is caught when it is loaded).
2. ``cache_dir()/<filename>``, checked against the catalog MD5 (a corrupt file is downloaded again).
3. The official URL, downloaded into the cache with an MD5 check.

Only the standard library's :mod:`urllib` touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from medclass.data.catalog import DatasetInfo
from medclass.errors import DataError
from medclass.utils.files import atomic_open

log = logging.getLogger(__name__)

__all__ = ["cache_dir", "download_file", "md5sum", "resolve"]

_DATA_DIR_VAR = "MEDCLASS_DATA_DIR"
_CACHE_DIR_VAR = "MEDCLASS_CACHE_DIR"
_CHUNK = 1 << 20


class _FetchError(Exception):
    """A download failed for a network or file-system reason; the message is the reason."""


def cache_dir() -> Path:
    """Return the download cache folder (it is not created here).

    Returns:
        ``$MEDCLASS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/medclass``, else ``~/.cache/medclass``.
    """
    explicit = os.environ.get(_CACHE_DIR_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "medclass"
    return Path.home() / ".cache" / "medclass"


def md5sum(path: Path, chunk: int = _CHUNK) -> str:
    """Return the MD5 checksum of a file as lowercase hex, reading it in chunks.

    Args:
        path: File to hash.
        chunk: Bytes read at a time.

    Returns:
        The hex digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    """Side file recording that ``path`` was verified: ``<name>.md5`` next to it."""
    return path.with_name(path.name + ".md5")


def _stamp_text(path: Path, md5: str) -> str:
    """Content of the side file: the checksum plus the file's size and modification time."""
    st = path.stat()
    return f"{md5} {st.st_size} {st.st_mtime_ns}\n"


def _write_stamp(path: Path, md5: str) -> None:
    """Record that ``path`` has checksum ``md5``, so later calls need not hash it again."""
    with contextlib.suppress(OSError):  # the stamp only saves time; never fail because of it
        _stamp_path(path).write_text(_stamp_text(path, md5), encoding="ascii")


def _cached_ok(path: Path, md5: str) -> bool:
    """Whether a cached file has the expected checksum.

    A file whose side stamp matches its current size and modification time is trusted without hashing,
    so large cached files are not read on every call; otherwise the file is hashed (and stamped if good).
    """
    try:
        if _stamp_path(path).read_text(encoding="ascii") == _stamp_text(path, md5):
            return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        good = md5sum(path) == md5
    except OSError:
        return False
    if good:
        _write_stamp(path, md5)
    return good


def _fetch(url: str, dest: Path, md5: str | None, *, progress: bool, timeout: float) -> Path:
    """Download ``url`` to ``dest`` through a temporary file; see :func:`download_file`.

    Raises:
        _FetchError: On a network or file-system failure, with the reason as message.
        DataError: If the downloaded file's MD5 is not ``md5``.
    """
    from tqdm.auto import tqdm  # imported here so that importing medclass stays light

    from medclass.utils.progress import show_progress

    log.info("downloading %s from %s", dest.name, url)
    try:
        from medclass import __version__

        request = urllib.request.Request(url, headers={"User-Agent": f"medclass/{__version__}"})
        digest = hashlib.md5(usedforsecurity=False)
        with (  # the file replaces dest only when the block ends without error (complete, checksum right)
            atomic_open(dest, "wb", suffix=".part") as out,
            urllib.request.urlopen(request, timeout=timeout) as response,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            got = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not show_progress(progress),
                leave=False,
            ) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    got += len(block)
                    bar.update(len(block))
            if total is not None and got != total:
                raise _FetchError(f"connection closed after {got} of {total} bytes")
            actual = digest.hexdigest()
            if md5 is not None and actual != md5.lower():
                raise DataError(f"{dest.name}: MD5 mismatch after download from {url}: expected {md5}, got {actual}")
        if md5 is not None:
            _write_stamp(dest, actual)
        return dest
    except urllib.error.HTTPError as exc:
        raise _FetchError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _FetchError(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers timeouts and disk errors; ValueError an unsupported or malformed URL.
        raise _FetchError(str(exc) or type(exc).__name__) from exc


def download_file(url: str, dest: Path, md5: str | None, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download a URL to a file, atomically, checking its MD5.

    The data go to a temporary file in ``dest``'s folder, which is renamed to ``dest`` only when the
    download is complete and its checksum is right; on any failure it is removed and ``dest`` is left
    untouched.

    Args:
        url: URL to fetch (``http``, ``https`` or ``file``).
        dest: Destination file; its folder is created if needed.
        md5: Expected MD5 checksum as hex, or ``None`` to skip the check.
        progress: Show a tqdm progress bar on stderr (on a terminal only; the download is logged either way).
        timeout: Socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        DataError: If the download fails or the checksum does not match.
    """
    dest = Path(dest)
    try:
        return _fetch(url, dest, md5, progress=progress, timeout=timeout)
    except _FetchError as exc:
        raise DataError(f"{dest.name}: download from {url} failed: {exc}") from exc


def resolve(info: DatasetInfo, size: int = 28, *, download: bool = True, progress: bool = True) -> Path:
    """Return a local path to a catalog file, downloading it into the cache if needed.

    Args:
        info: Catalog entry of the dataset.
        size: Image size of the wanted file.
        download: Whether to download the file when it is neither in the mirror nor in the cache.
        progress: Show a progress bar while downloading (on a terminal only).

    Returns:
        Path of the file in ``$MEDCLASS_DATA_DIR`` or in the cache.

    Raises:
        DataError: If the size is not available, or the file is not on disk and cannot be downloaded
            (download disabled, offline, server error or checksum mismatch).
    """
    entry = info.file(size)
    name = entry.filename

    mirror_env = os.environ.get(_DATA_DIR_VAR)
    mirror = Path(mirror_env).expanduser() if mirror_env else None
    if mirror is not None:
        candidate = mirror / name
        with contextlib.suppress(OSError):
            if candidate.is_file() and candidate.stat().st_size > 0:
                return candidate

    cache = cache_dir()
    cached = cache / name
    if cached.is_file() and _cached_ok(cached, entry.md5):
        return cached
    # Not cached, or a corrupt or partial cached file: download it (again).

    where = f"{_DATA_DIR_VAR}={mirror} or cache {cache}" if mirror is not None else f"cache {cache}"
    if not download:
        raise DataError(f"{name} not found in {where}, and downloading is disabled")
    try:
        return _fetch(entry.url, cached, entry.md5, progress=progress, timeout=60.0)
    except _FetchError as exc:
        raise DataError(f"{name} not found in {where}, and download from {entry.url} failed: {exc}") from exc
