"""``medclass node`` as a process: killed (SIGKILL) with a study received but not yet reported, restarted on the
same state folder, it reports everything once; its log names no patient."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from .conftest import NODE_AET, ORTHANC_AET, free_port, start_orthanc, stop_orthanc, wait_for


def _study(make_dicom, folder: Path, n_series: int, per_series: int, tag: str) -> list[bytes]:
    out = []
    study = pydicom.uid.generate_uid()
    for s in range(n_series):
        series = pydicom.uid.generate_uid()
        for i in range(per_series):
            pixels = np.random.default_rng(s * 10 + i).integers(0, 4000, (24, 24))
            path = make_dicom(folder / f"{tag}{s}_{i}.dcm", pixels, patient_id=f"RST-{tag}", patient_name=f"Kill^{tag}")
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            out.append(buf.getvalue())
    return out


def _node(run: Path, state: Path, port: int, pacs_port: int, settle: float, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    cmd = [sys.executable, "-m", "medclass", "node", "--checkpoint", str(run), "--ae-title", NODE_AET]
    cmd += ["--port", str(port), "--host", "127.0.0.1", "--pacs", f"127.0.0.1:{pacs_port}:{ORTHANC_AET}"]
    cmd += ["--state", str(state), "--settle", str(settle), "--allow-aet", f"{ORTHANC_AET},TESTSCU", "-v"]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def _echo(port: int, aet: str = "TESTSCU") -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


def _instances(state: Path) -> int:
    db = state / "queue.sqlite"
    if not db.is_file():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_a_node_killed_mid_study_reports_everything_once_after_a_restart(small_binary_run, make_dicom, tmp_path):
    run, _ = small_binary_run
    port = free_port()
    (tmp_path / "orthanc").mkdir()
    orthanc = start_orthanc(tmp_path / "orthanc", port)
    state, log = tmp_path / "state", tmp_path / "node.log"
    blobs = _study(make_dicom, tmp_path / "a", 2, 3, "A") + _study(make_dicom, tmp_path / "b", 1, 1, "B")
    proc = _node(run, state, port, orthanc.dicom_port, 3600, log)  # never settles: nothing is reported
    try:
        wait_for(lambda: proc.poll() is None and _echo(port), "the node to answer C-ECHO", timeout=60)
        assert not _echo(port, aet="STRANGER")  # not on the allow-list: association refused
        for blob in blobs:
            assert orthanc.upload(blob)["Status"] == "Success"
        wait_for(lambda: _instances(state) == len(blobs), "the node to queue every routed instance", timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert orthanc.find("Instance", {"Modality": "SR"}) == []

        proc = _node(run, state, port, orthanc.dicom_port, 0.2, log)
        reports = lambda: orthanc.find("Instance", {"Modality": "SR"})  # noqa: E731
        wait_for(lambda: len(reports()) >= 3, "3 reports after the restart", timeout=60)
        time.sleep(1.0)  # nothing more arrives
        assert len(reports()) == 3
        assert len(orthanc.find("Instance", {"Modality": "OT"})) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_orthanc(orthanc)
    text = log.read_text(errors="replace")
    assert "done in" in text
    for secret in ("RST-A", "RST-B", "Kill^A", "Kill^B", "Kill"):
        assert secret not in text, f"{secret} in the node's log"


@pytest.mark.parametrize("args", [["--pacs", "nowhere"], []])
def test_node_command_refuses_a_bad_destination(run_cli, small_binary_run, args):
    run, _ = small_binary_run
    res = run_cli("node", "--checkpoint", run, *args)
    assert res.code == 2 and "--pacs" in res.err
