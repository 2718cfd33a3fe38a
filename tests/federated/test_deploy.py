"""Deployment as real processes on loopback: SuperLink + SuperNodes over TLS, faults survived, no images on the server.

Each test starts every process it needs (``medclass federate --role server|client``) and stops them at the end; each
takes one to four minutes on two cores (every message starts a ClientApp process), so all are ``slow``: the same
logic runs fast in-process in ``test_server.py`` (rounds, refusal, ``--min-clients``, ``--resume``, messages without
data) and here against Flower's real runtime. A
``sitecustomize`` audit hook records every file a process tree opens under the data folder, so the server's side
(``medclass``, ``flower-superlink``, ``flwr-serverapp``) is checked to read none of them, while the clients do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

AUDIT = """\
import os, sys
_log, _root = os.environ.get("MEDCLASS_AUDIT_LOG"), os.environ.get("MEDCLASS_AUDIT_ROOT")
if _log and _root:
    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(_root):
                with open(_log, "a") as fh:
                    fh.write(f"{os.getpid()} {path}\\n")
    sys.addaudithook(_hook)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Federation:
    """The processes of one test: start them, wait for log lines, kill them, clean up."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.procs = root, _free_port(), {}
        (root / "audit").mkdir()
        (root / "audit" / "sitecustomize.py").write_text(AUDIT)
        self.data_root = root / "data"
        from medclass.federated.deploy import make_certificates

        self.certs = make_certificates(root / "certs")

    def env(self, who: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root / "audit"), str(REPO / "src")])
        env.update(MEDCLASS_AUDIT_LOG=str(self.root / f"audit-{who}.txt"), MEDCLASS_AUDIT_ROOT=str(self.data_root))
        env["OMP_NUM_THREADS"] = "1"
        return env

    def start(self, name: str, *args: str | Path, who: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        cmd = [sys.executable, "-m", "medclass", "federate", *map(str, args)]
        proc = subprocess.Popen(cmd, env=self.env(who), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def server(self, out: Path, *extra: str | Path, name: str = "server") -> subprocess.Popen:
        return self.start(
            name, "--role", "server", "--listen", f"127.0.0.1:{self.port}", "--certificates", self.root / "certs",
            "--out", out, "--batch-size", "16", "--no-baseline", "--round-timeout", "60", *extra, who="server",
        )  # fmt: skip

    def client(self, k: int, data: Path, n: int, *extra: str | Path, name: str | None = None) -> subprocess.Popen:
        return self.start(
            name or f"client{k}", "--role", "client", "--data", data, "--partition", "iid", "--clients", str(n),
            "--client-id", str(k), "--server", f"127.0.0.1:{self.port}", "--root-certificates", self.certs["ca"],
            *extra, who="clients",
        )  # fmt: skip

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n in self.procs)
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.procs.pop(name)


@pytest.fixture
def fed(tmp_path: Path, make_npz) -> Iterator[tuple[Federation, Path]]:
    f = Federation(tmp_path)
    data = make_npz(f.data_root / "site.npz", sizes=(60, 20, 20), size=16)
    try:
        yield f, data
    finally:
        f.close()


def _finished(f: Federation, name: str, timeout: float) -> int:
    proc = f.procs[name]
    f.wait_for(lambda: proc.poll() is not None, timeout, f"{name} to finish")
    return proc.returncode


@pytest.mark.slow
def test_tls_federation_server_reads_no_images_and_a_mismatched_client_is_refused(fed, make_npz) -> None:
    from medclass.federated.deploy import make_node_key

    f, data = fed
    other = make_npz(f.data_root / "other.npz", task="multiclass", num_classes=3, sizes=(30, 10, 10), size=16)
    keys = {name: make_node_key(f.root / "keys" / name)[0] for name in ("c0", "c1", "bad")}
    intruder = make_node_key(f.root / "intruder" / "key")[0]  # a key the server never registered
    out = f.root / "run"
    f.server(out, "--rounds", "1", "--clients", "3", "--min-clients", "2", "--authorized-keys", f.root / "keys")
    f.wait_for(lambda: "client keys registered" in f.log("server"), 120, "the clients' keys to be registered")
    f.client(0, data, 2, "--auth-key", keys["c0"])
    f.client(1, data, 2, "--auth-key", keys["c1"])
    bad = f.start("bad", "--role", "client", "--data", other, "--client-id", "2", "--server", f"127.0.0.1:{f.port}",
                  "--root-certificates", f.certs["ca"], "--auth-key", keys["bad"], who="clients")  # fmt: skip
    f.client(1, data, 2, "--auth-key", intruder, name="intruder")
    assert _finished(f, "server", 240) == 0, f.log("server")[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["client"] for c in metrics["federated"]["clients"]] == ["client-0", "client-1"]
    assert metrics["federated"]["history"][0]["clients"] == 2
    assert "medclass: error" not in f.log("server")
    refusal = [line for line in (out / "federation.log").read_text().splitlines() if "left out:" in line]
    assert len(refusal) == 1 and 'task "multiclass" differ from the federation\'s "binary"' in refusal[0]
    assert str(other) not in refusal[0]  # the server learns why, not where the client's data lives
    f.wait_for(lambda: bad.poll() is not None, 30, "the refused client to stop")
    assert bad.returncode == 2
    errors = [line for line in f.log("bad").splitlines() if line.startswith("medclass: error: ")]
    assert len(errors) == 1 and str(other) in errors[0] and "differ from the federation's" in errors[0], errors
    assert "TLS" in f.log("server") and "3 client keys registered" in f.log("server")
    assert "3 clients joined" not in (out / "federation.log").read_text()  # the intruder never got in
    assert "Failed to activate SuperNode" in f.log("intruder")
    served = (f.root / "audit-clients.txt").read_text()
    assert str(data) in served and str(other) in served  # the audit hook sees the clients' reads
    assert not (f.root / "audit-server.txt").exists()  # the server's processes opened nothing under the data folder
    assert str(f.data_root) not in (out / "state.json").read_text() + (out / "metrics.json").read_text()


@pytest.mark.slow
def test_client_killed_mid_round_round_completes_and_client_rejoins(fed) -> None:
    f, data = fed
    out = f.root / "run"
    f.server(out, "--rounds", "3", "--clients", "3", "--min-clients", "2", "--round-timeout", "45")
    for k in range(3):
        f.client(k, data, 3)
    f.wait_for(lambda: "Receiving: train message" in f.log("client2"), 240, "client 2 to receive round 1")
    f.kill("client2")  # mid-round: it had received the round's model and not answered
    fed_log = out / "federation.log"
    f.wait_for(lambda: fed_log.exists() and "round 1/3" in fed_log.read_text(), 240, "round 1 without client 2")
    f.client(2, data, 3, name="client2-again")
    assert _finished(f, "server", 400) == 0, f.log("server")[-3000:]
    history = json.loads((out / "metrics.json").read_text())["federated"]["history"]
    assert history[0]["clients"] == 2  # round 1 completed with the two clients left
    assert history[-1]["clients"] == 3  # the client rejoined for a later round


@pytest.mark.slow
def test_server_killed_resumes_from_last_completed_round(fed) -> None:
    f, data = fed
    out = f.root / "run"
    f.server(out, "--rounds", "3", "--clients", "2", "--min-clients", "2")
    for k in range(2):
        f.client(k, data, 2)
    f.wait_for(lambda: (out / "state.json").exists(), 240, "round 1's checkpoint")
    f.kill("server")
    done = json.loads((out / "state.json").read_text())["round"]
    assert 1 <= done < 3
    for k in range(2):
        f.kill(f"client{k}")
        f.client(k, data, 2, name=f"client{k}-again")
    f.server(out, "--rounds", "3", "--clients", "2", "--min-clients", "2", "--resume", name="server-again")
    assert _finished(f, "server-again", 400) == 0, f.log("server-again")[-3000:]
    assert f"resuming {out} after round {done}" in (out / "federation.log").read_text()
    history = json.loads((out / "metrics.json").read_text())["federated"]["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
