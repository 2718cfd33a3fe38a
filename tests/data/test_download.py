"""Tests for finding and downloading catalog files, against a loopback HTTP server (no network)."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medclass.data.catalog import DatasetFile, DatasetInfo
from medclass.data.download import cache_dir, download_file, md5sum, resolve
from medclass.errors import DataError

PAYLOAD = bytes(range(256)) * 4096 + b"medclass"  # ~1 MiB, more than one read chunk
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Server:
    """A loopback HTTP server that serves ``files`` (path -> bytes) and counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        return f"{self.base}/files/{name}?download=1"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.files["/files/fakemnist_64.npz"] = PAYLOAD
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the real mirror and cache out of these tests."""
    monkeypatch.delenv("MEDCLASS_DATA_DIR", raising=False)
    monkeypatch.setenv("MEDCLASS_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _info(url: str, md5: str = PAYLOAD_MD5) -> DatasetInfo:
    return DatasetInfo(
        name="fakemnist",
        task="binary",
        ndim=2,
        channels=1,
        label_names=("no", "yes"),
        n_samples={"train": 1, "val": 1, "test": 1},
        license="CC BY 4.0",
        source="synthetic test data",
        files={64: DatasetFile(64, url, md5)},
    )


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/fakemnist_64.npz?download=1"


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDCLASS_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MEDCLASS_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "medclass"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "medclass"
    assert not (tmp_path / "home").exists()


def test_md5sum(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(PAYLOAD)
    assert md5sum(path) == PAYLOAD_MD5
    assert md5sum(path, chunk=1000) == PAYLOAD_MD5


def test_download_file_ok(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dir" / "out.npz"
    assert download_file(server.url("fakemnist_64.npz"), dest, PAYLOAD_MD5, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.npz", "out.npz.md5"]


def test_download_file_without_md5(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "out.npz"
    download_file(server.url("fakemnist_64.npz"), dest, None, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_file_md5_mismatch(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "out.npz"
    with pytest.raises(DataError, match=f"out.npz: MD5 mismatch .*expected {'0' * 32}, got {PAYLOAD_MD5}"):
        download_file(server.url("fakemnist_64.npz"), dest, "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left


def test_download_file_http_error(server: _Server, tmp_path: Path) -> None:
    url = server.url("missing.npz")
    with pytest.raises(DataError, match=r"out.npz: download from .*missing.npz.* failed: HTTP 404"):
        download_file(url, tmp_path / "out.npz", None, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_file_bad_url(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download from not-a-url failed"):
        download_file("not-a-url", tmp_path / "out.npz", None, progress=False)


def test_resolve_downloads_into_cache(server: _Server, tmp_path: Path) -> None:
    path = resolve(_info(server.url("fakemnist_64.npz")), 64, progress=False)
    assert path == tmp_path / "cache" / "fakemnist_64.npz"
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/files/fakemnist_64.npz"]


def test_resolve_reuses_cache_without_network(server: _Server, tmp_path: Path) -> None:
    info = _info(server.url("fakemnist_64.npz"))
    first = resolve(info, 64, progress=False)
    server.httpd.shutdown()  # from now on any download attempt would fail
    assert resolve(info, 64, progress=False) == first
    assert resolve(info, 64, download=False) == first
    # A cached file placed by hand (no stamp) is verified by hashing and reused too.
    (tmp_path / "cache" / "fakemnist_64.npz.md5").unlink()
    assert resolve(_info(_closed_port_url()), 64, progress=False) == first
    assert server.requests == ["/files/fakemnist_64.npz"]


def test_resolve_replaces_corrupt_cache(server: _Server, tmp_path: Path) -> None:
    cached = tmp_path / "cache" / "fakemnist_64.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    assert resolve(_info(server.url("fakemnist_64.npz")), 64, progress=False) == cached
    assert cached.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    # Corrupting it again after it was stamped is still noticed (size and mtime changed).
    cached.write_bytes(PAYLOAD[:-1] + b"X")
    assert resolve(_info(server.url("fakemnist_64.npz")), 64, progress=False) == cached
    assert cached.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_resolve_mirror_takes_precedence(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fakemnist_64.npz").write_bytes(b"mirror copy, not hashed")
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(mirror))
    assert resolve(_info(server.url("fakemnist_64.npz")), 64, progress=False) == mirror / "fakemnist_64.npz"
    assert server.requests == []
    assert not (tmp_path / "cache").exists()


def test_resolve_empty_mirror_file_is_skipped(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fakemnist_64.npz").write_bytes(b"")
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(mirror))
    path = resolve(_info(server.url("fakemnist_64.npz")), 64, progress=False)
    assert path == tmp_path / "cache" / "fakemnist_64.npz"
    assert (mirror / "fakemnist_64.npz").read_bytes() == b""


def test_resolve_md5_mismatch(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"fakemnist_64.npz: MD5 mismatch .*expected {'1' * 32}, got {PAYLOAD_MD5}"):
        resolve(_info(server.url("fakemnist_64.npz"), md5="1" * 32), 64, progress=False)
    assert not (tmp_path / "cache" / "fakemnist_64.npz").exists()


def test_resolve_unreachable_names_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(mirror))
    url = _closed_port_url()
    with pytest.raises(DataError) as exc:
        resolve(_info(url), 64, progress=False)
    msg = str(exc.value)
    assert msg.startswith(
        f"fakemnist_64.npz not found in MEDCLASS_DATA_DIR={mirror} or cache {tmp_path / 'cache'}, "
        f"and download from {url} failed: "
    )
    assert "\n" not in msg
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_resolve_unreachable_without_mirror(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^fakemnist_64.npz not found in cache .*, and download from .* failed"):
        resolve(_info(_closed_port_url()), 64, progress=False)


def test_resolve_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found in cache .*, and downloading is disabled"):
        resolve(_info(_closed_port_url()), 64, download=False)


def test_resolve_unknown_size(server: _Server) -> None:
    with pytest.raises(DataError, match="fakemnist: no 28 px file; available sizes: 64"):
        resolve(_info(server.url("fakemnist_64.npz")), 28)
