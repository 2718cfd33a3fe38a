"""Deployment as real processes on Flower's runtime: a SuperLink and the run for the server, a SuperNode per client.

``medclass federate --role server`` starts ``flower-superlink`` (TLS unless ``--insecure``), writes a Flower app
folder whose components are :data:`medclass.federated.apps.server_app`/``client_app`` and submits it with
``flwr run``; the SuperLink starts the ``ServerApp`` (``flwr-serverapp``), which holds the settings and the run
folder, never a data path. ``medclass federate --role client`` starts ``flower-supernode`` with the client's data
in ``--node-config``; the SuperNode starts a ``ClientApp`` process (``flwr-clientapp``) for each message.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medclass.errors import ConfigError, DataError, MedclassError
from medclass.federated.client import ClientSource
from medclass.federated.server import ServerSettings

log = logging.getLogger(__name__)

#: Seconds a refused client waits, so its SuperNode can send the refusal's reason, before it stops.
REPLY_GRACE_S = 5.0

APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medclass-federation"
version = "1.0.0"
description = "medclass federate: the server and client apps of medclass.federated"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "medclass"

[tool.flwr.app.components]
serverapp = "medclass.federated.apps:server_app"
clientapp = "medclass.federated.apps:client_app"

[tool.flwr.app.config]
settings = "{}"
"""


def tool_env() -> dict[str, str]:
    """The environment of Flower's processes: this interpreter's scripts first on PATH (``flower-superlink``,
    ``flwr``, and the ``flwr-serverapp``/``flwr-clientapp`` they start), so they import this medclass."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def make_certificates(folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A private CA and a server certificate for ``hosts`` (PEM files in ``folder``), for TLS on a test federation.

    Returns:
        ``{"ca": ca.pem, "cert": server.pem, "key": server.key}``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("medclass federation CA"))
        .issuer_name(name("medclass federation CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths["key"].chmod(0o600)
    return paths


def make_node_key(path: str | Path) -> tuple[Path, Path]:
    """A client's authentication key pair: ``path`` (OpenSSH EC P-384 private key, mode 0600) and ``path.pub``.

    The server lists the ``.pub`` files it accepts (``--authorized-keys DIR``); the client signs with the private key
    (``--auth-key``). Flower's SuperLink refuses a SuperNode whose key was not registered.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return path, pub


def authorized_keys(folder: str | Path) -> list[Path]:
    """The ``*.pub`` files of ``folder``; a one-line ConfigError when there are none."""
    keys = sorted(Path(folder).glob("*.pub"))
    if not keys:
        raise ConfigError(f"{folder}: no client public keys (*.pub) to authorise")
    return keys


def certificate_paths(folder: str | Path | None) -> dict[str, Path] | None:
    """``ca.pem``, ``server.pem`` and ``server.key`` of ``folder`` (made when it has none); ``None`` for no folder."""
    if folder is None:
        return None
    folder = Path(folder)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    if not all(p.is_file() for p in paths.values()):
        if any(p.exists() for p in paths.values()):
            missing = ", ".join(p.name for p in paths.values() if not p.is_file())
            raise ConfigError(f"{folder}: certificate folder lacks {missing}")
        return make_certificates(folder)
    return paths


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Return once ``host:port`` accepts connections; ``MedclassError`` when ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise MedclassError(f"the SuperLink exited with status {process.returncode} (see its log)")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise MedclassError(f"{host}:{port}: nothing listening after {timeout:.0f} s")


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate ``process`` (Flower stops its own app processes), then wait; kill it after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 9092,
    certificates: str | Path | None = None,
    insecure: bool = False,
    log_file: str | Path | None = None,
    keys: str | Path | None = None,
) -> dict[str, Any]:
    """Run the server side to the end: SuperLink, the run submitted with ``flwr run``; the ``metrics.json`` content.

    Args:
        settings: The server's settings (``settings.out`` is the run folder).
        host: Address the SuperLink listens on.
        port: Its port (Fleet, Control and Runtime APIs share it).
        certificates: Folder with ``ca.pem``, ``server.pem``, ``server.key`` (made there when absent); clients verify
            the server with ``ca.pem``.
        insecure: No TLS (loopback experiments only).
        log_file: Where the SuperLink's and the run's output go (default ``<out>/server.log``).
        keys: Folder of the clients' public keys (``*.pub``, :func:`make_node_key`): only their SuperNodes may
            connect (Flower's SuperNode authentication). ``None``: any SuperNode may.
    """
    if not insecure and certificates is None:
        raise ConfigError("--role server: give --certificates DIR (TLS) or --insecure")
    certs = None if insecure else certificate_paths(certificates)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file) if log_file else out / "server.log"
    env = tool_env()
    work = Path(tempfile.mkdtemp(prefix="medclass-fed-"))
    env["FLWR_HOME"] = str(work / "flwr")
    (work / "flwr").mkdir()
    (work / "app").mkdir()
    (work / "app" / "pyproject.toml").write_text(APP_TOML, encoding="utf-8")
    connection = {"address": f"{host}:{port}"}
    link_cmd = [
        "flower-superlink",
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    accepted = authorized_keys(keys) if keys is not None else []
    if accepted:
        link_cmd.append("--enable-supernode-auth")
    if certs is None:
        link_cmd.append("--insecure")
        connection["insecure"] = True
    else:
        link_cmd += ["--ssl-certfile", str(certs["cert"]), "--ssl-keyfile", str(certs["key"])]
        link_cmd += ["--ssl-ca-certfile", str(certs["ca"])]
        connection["root-certificates"] = str(certs["ca"])
    toml = '[superlink]\ndefault = "medclass"\n\n[superlink.medclass]\n'
    toml += "".join(f"{k} = {json.dumps(v)}\n" for k, v in connection.items())
    (work / "flwr" / "config.toml").write_text(toml, encoding="utf-8")
    (work / "run.toml").write_text(f"settings = {json.dumps(settings.to_json())}\n", encoding="utf-8")
    with open(log_path, "ab") as logf:
        link = subprocess.Popen(link_cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        try:
            wait_for_port(host, port, 60, link)
            for key in accepted:  # through the SuperLink's Control API, as `flwr supernode register` does
                reg = subprocess.run(["flwr", "supernode", "register", str(key), "medclass"], env=env, stdout=logf,
                                     stderr=subprocess.STDOUT, check=False)  # fmt: skip
                if reg.returncode != 0:
                    raise MedclassError(f"{key}: the SuperLink did not register this client key (see {log_path})")
            if accepted:
                log.info("SuperNode authentication: %d client keys registered", len(accepted))
            log.info("SuperLink on %s:%d (%s); submitting the federation", host, port, "TLS" if certs else "insecure")
            run = subprocess.run(
                ["flwr", "run", str(work / "app"), "medclass", "--run-config", str(work / "run.toml"), "--stream"],
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if run.returncode != 0:
                raise MedclassError(f"flwr run failed with status {run.returncode} (see {log_path})")
        finally:
            _stop(link)
            shutil.rmtree(work, ignore_errors=True)  # the app folder, Flower's home and the run's settings
    fed_log = out / "federation.log"
    for line in fed_log.read_text(encoding="utf-8").splitlines() if fed_log.is_file() else []:
        if " WARNING " in line:
            log.warning("%s", line.split(": ", 1)[-1])
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise MedclassError(f"{out}: the federation did not finish (see {log_path})")
    return json.loads(metrics.read_text(encoding="utf-8"))


def node_config(source: ClientSource) -> str:
    """``--node-config`` text of a client: its data and, optionally, its share of a partition."""
    items = {"data": source.spec, "client-id": source.index}
    if source.partition:
        items.update({"partition": source.partition, "clients": source.clients, "partition-seed": source.seed})
    return " ".join(f"{k}={json.dumps(v)}" for k, v in items.items())


def join(
    source: ClientSource,
    server: str,
    *,
    root_certificates: str | Path | None = None,
    insecure: bool = False,
    port: int = 0,
    auth_key: str | Path | None = None,
) -> int:
    """Run a client (``flower-supernode``) until it is stopped; its exit status.

    Args:
        source: The client's data.
        server: The SuperLink's ``HOST:PORT``.
        root_certificates: The CA file that signed the server's certificate (TLS).
        insecure: No TLS.
        port: Port of the SuperNode's local API for its ClientApp processes (0: a free one).
        auth_key: The client's private key (:func:`make_node_key`), for a server that authenticates its clients.
    """
    if not insecure and root_certificates is None:
        raise ConfigError("--role client: give --root-certificates CA.pem (the server's CA) or --insecure")
    if root_certificates is not None and not Path(root_certificates).is_file():
        raise ConfigError(f"{root_certificates}: no such certificate file")
    from medclass.federated.client import load_site

    load_site(source, {"recipe": "default"})  # unreadable data: one line now, before joining anything
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = ["flower-supernode", "--superlink", server, "--port", str(port), "--node-config", node_config(source)]
    cmd += ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    if auth_key is not None:
        if not Path(auth_key).is_file():
            raise ConfigError(f"{auth_key}: no such key file")
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    from medclass.federated.apps import STATUS_ENV

    status = Path(tempfile.mkdtemp(prefix="medclass-client-")) / "status"
    env = dict(tool_env(), **{STATUS_ENV: str(status)})
    process = subprocess.Popen(cmd, env=env)
    told = False
    try:
        while process.poll() is None:
            if status.is_file() and (line := status.read_text(encoding="utf-8").strip()):
                time.sleep(REPLY_GRACE_S)  # let the SuperNode deliver the refusal to the server first
                raise DataError(line)  # refused by the federation: one line, then the SuperNode stops
            if status.is_file() and not told:
                log.info("joined the federation at %s", server)
                told = True
            time.sleep(0.5)
        return process.returncode
    finally:
        _stop(process)
        shutil.rmtree(status.parent, ignore_errors=True)
