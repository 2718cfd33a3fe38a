"""Sending results to the PACS: DICOM C-STORE or DICOMweb STOW-RS, and the study's triage mark in Orthanc.

Failures raise :class:`PacsUnavailable` (the node keeps the series and tries again later), with messages that
name the address and the status, never a patient.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from medclass.errors import ConfigError, MedclassError

LOG = logging.getLogger("medclass.node")


class PacsUnavailable(MedclassError):
    """The PACS did not take the results (unreachable, refused, or a failure status)."""


def parse_pacs(spec: str) -> tuple[str, int, str]:
    """``HOST:PORT:AET`` as ``(host, port, aet)``.

    Raises:
        ConfigError: Not of that form.
    """
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2] or len(parts[2]) > 16:
        raise ConfigError(f"--pacs {spec}: expected HOST:PORT:AET (an AE title of at most 16 characters)")
    return parts[0], int(parts[1]), parts[2]


def _encode(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class DicomSender:
    """C-STORE results to ``host:port`` (called AE title ``aet``) as ``calling_aet``."""

    def __init__(self, host: str, port: int, aet: str, *, calling_aet: str = "MEDCLASS", timeout_s: float = 30) -> None:
        self.host, self.port, self.aet, self.calling_aet, self.timeout_s = host, port, aet, calling_aet, timeout_s

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"

    def send(self, datasets: Sequence[Any]) -> None:
        """Store every dataset in one association.

        Raises:
            PacsUnavailable: No association, or a status other than success (warnings pass).
        """
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(uid)
        assoc = ae.associate(self.host, self.port, ae_title=self.aet)
        if not assoc.is_established:
            raise PacsUnavailable(f"{self}: no association (unreachable, or the AE titles are refused)")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None or (code != 0 and (code & 0xF000) not in (0xB000,)):
                    shown = "no answer" if code is None else f"0x{code:04X}"
                    raise PacsUnavailable(f"{self}: C-STORE refused ({shown})")
        finally:
            assoc.release()


class StowSender:
    """STOW-RS results to a DICOMweb service root (``https://pacs/dicom-web``), with an optional bearer token."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 30) -> None:
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s

    def __str__(self) -> str:
        return self.url

    def send(self, datasets: Sequence[Any]) -> None:
        """POST every dataset in one multipart request to ``URL/studies``.

        Raises:
            PacsUnavailable: A connection error or an HTTP status other than 200/202.
        """
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for ds in datasets:
            body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.write(_encode(ds))
            body.write(b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.url}/studies", data=body.getvalue(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as res:  # noqa: S310 - the configured PACS
                status = res.status
        except urllib.error.HTTPError as err:
            raise PacsUnavailable(f"{self}: STOW-RS answered HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            raise PacsUnavailable(f"{self}: STOW-RS failed ({getattr(err, 'reason', err)})") from None
        if status not in (200, 202):
            raise PacsUnavailable(f"{self}: STOW-RS answered HTTP {status}")


class OrthancMarker:
    """Write the triage result on the study in Orthanc's REST API as user-defined metadata.

    Orthanc 1.10 has no labels; metadata named here must be declared in Orthanc's ``UserMetadata``
    (``"medclass-urgency": 4301, "medclass-triage": 4302``, see the README).

    Args:
        url: Orthanc's REST root (``http://127.0.0.1:8042``).
        auth: ``user:password`` for HTTP basic authentication, or ``None``.
    """

    def __init__(self, url: str, *, auth: str | None = None, timeout_s: float = 10) -> None:
        self.url, self.auth, self.timeout_s = url.rstrip("/"), auth, timeout_s

    def _call(self, method: str, path: str, data: bytes) -> bytes:
        import base64

        headers = {"Content-Type": "text/plain"}
        if self.auth:
            headers["Authorization"] = "Basic " + base64.b64encode(self.auth.encode()).decode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as res:  # noqa: S310 - the configured PACS
                return res.read()
        except urllib.error.HTTPError as err:
            raise PacsUnavailable(f"{self.url}{path.split('/metadata')[0][:20]}...: HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            raise PacsUnavailable(f"{self.url}: {getattr(err, 'reason', err)}") from None

    def mark(self, study_uid: str, urgency: float, refer: bool | None, label: str) -> None:
        """Set ``medclass-urgency`` (e.g. ``0.8731``) and ``medclass-triage`` (``refer``/``routine`` + decision)."""
        found = json.loads(self._call("POST", "/tools/lookup", study_uid.encode()))
        ids = [f["ID"] for f in found if f.get("Type") == "Study"]
        if not ids:
            raise PacsUnavailable(f"{self.url}: the study is not in Orthanc (yet)")
        triage = f"{'refer' if refer else 'routine'}; {label}"
        for sid in ids:
            self._call("PUT", f"/studies/{sid}/metadata/medclass-urgency", f"{urgency:.4f}".encode())
            self._call("PUT", f"/studies/{sid}/metadata/medclass-triage", triage.encode())
