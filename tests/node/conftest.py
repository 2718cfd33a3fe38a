"""A real PACS for the node's tests: Orthanc on free loopback ports with a generated configuration.

``.ci/run`` installs Debian's ``orthanc`` (and ``orthanc-dicomweb``, ``dicom3tools``). Under ``CI`` a missing
Orthanc fails the tests that need it, with the reason ``.ci/run`` recorded in ``MEDCLASS_NO_ORTHANC``; elsewhere
they are skipped. Orthanc routes every instance it stores, except the node's own results, to the node (a Lua
``OnStoredInstance`` script), the way a hospital's PACS would auto-route to an AI node.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NODE_AET = "MEDCLASS"
ORTHANC_AET = "ORTHANC"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Manufacturer'] ~= 'medclass' and tags['Modality'] ~= 'SR' then
    SendToModality(instanceId, 'medclass')
  end
end
"""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str:
    """Path of ``Orthanc``, or a skip/fail saying why it is missing."""
    exe = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)
    if exe:
        return exe
    why = os.environ.get("MEDCLASS_NO_ORTHANC") or "Orthanc is not installed (apt-get install orthanc)"
    if os.environ.get("CI"):
        pytest.fail(f"the PACS tests must run in CI: {why}")
    pytest.skip(why)


@dataclass
class Orthanc:
    """A running Orthanc: its REST root, DICOM port, the node's port it routes to, and the process."""

    url: str
    dicom_port: int
    node_port: int
    proc: subprocess.Popen
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as res:
            body = res.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes | dict | list, content_type: str = "application/json") -> Any:
        raw = json.dumps(data).encode() if isinstance(data, dict | list) else data
        req = urllib.request.Request(self.url + path, data=raw, method="POST", headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=60) as res:
            body = res.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store a DICOM file through the REST API (``POST /instances``); Orthanc then routes it to the node."""
        return self.post("/instances", data, "application/dicom")

    def find(self, level: str, query: dict[str, str]) -> list[str]:
        return self.post("/tools/find", {"Level": level, "Query": query})

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")


def _write_config(folder: Path, http_port: int, dicom_port: int, node_port: int) -> Path:
    lua = folder / "route.lua"
    lua.write_text(ROUTE_LUA, encoding="utf-8")
    config: dict[str, Any] = {
        "Name": "medclass-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom_port,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomModalities": {"medclass": [NODE_AET, "127.0.0.1", node_port]},
        "LuaScripts": [str(lua)],
        "UserMetadata": {"medclass-urgency": 4301, "medclass-triage": 4302},
        "OverwriteInstances": False,
        "StableAge": 3600,
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 1,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def start_orthanc(folder: Path, node_port: int, timeout: float = 30.0) -> Orthanc:
    """Start Orthanc with a configuration in ``folder`` routing to ``node_port``; wait for ``/system``."""
    exe = orthanc_binary()
    http_port, dicom_port = free_port(), free_port()
    config = _write_config(folder, http_port, dicom_port, node_port)
    log = folder / "orthanc.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([exe, str(config)], stdout=fh, stderr=subprocess.STDOUT, cwd=folder)
    server = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port, node_port, proc, log)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"Orthanc exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            if server.get("/system").get("DicomAet") == ORTHANC_AET:
                return server
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("Orthanc did not answer /system within 30 s")


def stop_orthanc(server: Orthanc) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(5)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A fresh Orthanc for a test module; the node it routes to listens on ``orthanc.node_port``."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), free_port())
    try:
        yield server
    finally:
        stop_orthanc(server)


def wait_for(check: Any, what: str, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
