"""PACS node benchmark: C-STORE to SR-in-Orthanc latency, a 200-study burst, and a kill/restart during a burst.

Starts Orthanc (Debian's ``orthanc`` package) on free loopback ports with a generated configuration whose Lua
``OnStoredInstance`` routes every new image to the node, and ``medclass node`` in its own process. Images are
real: PneumoniaMNIST test images (28 px) and Kermany chest X-rays (224 px), each wrapped as a one-image DICOM
study.

* latency: ``--studies`` studies sent one at a time by C-STORE to Orthanc; the time until the study's SR can be
  found in Orthanc (C-STORE -> Orthanc -> Lua routing -> node: settle, classify, Grad-CAM, SR + SC -> C-STORE
  back -> Orthanc index), p50 and p99, for a 28 px and a 224 px model. The node's ``--settle`` (how long a
  series must be quiet before it is classified) is part of it.
* burst: ``--burst`` studies sent as fast as one association goes; studies per second until the last SR is in
  Orthanc, then lost (a study without SR) and duplicated (a study with two) counts.
* kill: the same burst sent straight to the node by a sender that retries what the node did not acknowledge
  (as a PACS's forwarding queue does); the node is SIGKILLed after a third of the SRs and restarted on its
  state folder; lost and duplicated counts again.

Runs (trained once into ``runs/bench-pacs/`` and reused): 28 px ``default`` recipe on PneumoniaMNIST for one
epoch; 224 px ``hires`` recipe for one epoch on a small synthetic 224 px set (the latency depends on the
architecture and input size, not on what was learnt).

Writes ``BENCHMARKS.md`` (``pacs`` section) and ``bench/results/pacs.json``.

Usage:
    OMP_NUM_THREADS=1 python bench/pacs.py [--studies 30] [--burst 200] [--settle 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from machine import cpu_description  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pacs.json"
SHARED = ROOT.parent / "shared" / "data"
LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Manufacturer'] ~= 'medclass' and tags['Modality'] ~= 'SR' then
    SendToModality(instanceId, 'medclass')
  end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """Orthanc on loopback ports, routing to the node on ``node_port``."""

    def __init__(self, folder: Path, node_port: int) -> None:
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.http, self.dicom = free_port(), free_port()
        (folder / "route.lua").write_text(LUA)
        config = {
            "Name": "bench", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomModalities": {"medclass": ["MEDCLASS", "127.0.0.1", node_port]},
            "LuaScripts": [str(folder / "route.lua")], "StableAge": 3600,
            "UserMetadata": {"medclass-urgency": 4301, "medclass-triage": 4302},
        }  # fmt: skip
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http}"
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("Orthanc did not start")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as res:
            return json.loads(res.read())

    def find_sr(self, study_uid: str | None = None) -> list[str]:
        query = {"Modality": "SR", **({"StudyInstanceUID": study_uid} if study_uid else {})}
        body = json.dumps({"Level": "Instance", "Query": query}).encode()
        req = urllib.request.Request(self.url + "/tools/find", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())

    def sr_studies(self) -> dict[str, int]:
        """SR count per study (StudyInstanceUID) in Orthanc."""
        body = json.dumps({"Level": "Instance", "Query": {"Modality": "SR"}, "Expand": True}).encode()
        req = urllib.request.Request(self.url + "/tools/find", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as res:
            found = json.loads(res.read())
        studies: dict[str, int] = {}
        for inst in found:
            uid = self.get(f"/instances/{inst['ID']}/study")["MainDicomTags"]["StudyInstanceUID"]
            studies[uid] = studies.get(uid, 0) + 1
        return studies

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def wrap(pixels: np.ndarray, i: int) -> Any:
    """An 8-bit grey image as a one-image DICOM study (a DX Secondary Capture)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("bench", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = f"BENCH{i:05d}", f"Bench^Patient{i}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer = "DX", "bench"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def images(size: int, n: int) -> list[np.ndarray]:
    """``n`` real grey images: PneumoniaMNIST test images (28) or Kermany chest X-rays (224)."""
    if size == 28:
        with np.load(SHARED / "medmnist" / "pneumoniamnist.npz") as npz:
            return list(npz["test_images"][:n])
    from PIL import Image

    files = sorted((SHARED / "chest_xray_kermany224" / "test").rglob("*.jpeg"))[:n]
    return [np.asarray(Image.open(f).convert("L")) for f in files]


def train_runs(out: Path) -> dict[int, Path]:
    """The 28 px and 224 px runs (trained once, then reused)."""
    from medclass.cli import main as cli_main

    os.environ.setdefault("MEDCLASS_DATA_DIR", str(SHARED / "medmnist"))
    runs = {28: out / "pneumonia28", 224: out / "synthetic224"}
    if not (runs[28] / "metrics.json").is_file():
        assert cli_main(["train", "--data", "pneumoniamnist", "--recipe", "default", "--epochs", "1",
                         "--out", str(runs[28]), "--quiet", "--set", "eval.n_bootstrap=50"]) == 0  # fmt: skip
    if not (runs[224] / "metrics.json").is_file():
        rng = np.random.default_rng(0)
        arrays = {}
        for split, k in (("train", 48), ("val", 16), ("test", 16)):
            y = np.arange(k) % 2
            x = rng.integers(0, 60, (k, 224, 224)).astype(np.uint8)
            x[y == 1, :112] += 150
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
        npz = out / "synthetic224.npz"
        np.savez(npz, **arrays)
        assert cli_main(["train", "--data", str(npz), "--recipe", "hires", "--image-size", "224", "--epochs", "1",
                         "--out", str(runs[224]), "--quiet", "--set", "eval.n_bootstrap=20"]) == 0  # fmt: skip
    return runs


def start_node(run: Path, state: Path, port: int, orthanc: Orthanc, settle: float, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medclass", "node", "--checkpoint", str(run), "--port", str(port),
           "--host", "127.0.0.1", "--pacs", f"127.0.0.1:{orthanc.dicom}:ORTHANC", "--state", str(state),
           "--settle", str(settle), "--orthanc", orthanc.url]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited: {log.read_text()[-2000:]}")
        if echo(port):
            return proc
        time.sleep(0.2)
    raise SystemExit("the node did not answer C-ECHO")


def _ae(aet: str = "BENCHSCU") -> Any:
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification

    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.acse_timeout = ae.network_timeout = 5
    return ae


def echo(port: int) -> bool:
    assoc = _ae().associate("127.0.0.1", port, ae_title="MEDCLASS")
    if not assoc.is_established:
        return False
    assoc.release()
    return True


def store(port: int, aet: str, datasets: list[Any], *, retry: bool = False) -> None:
    """C-STORE every dataset over one association; with ``retry``, re-send what was not acknowledged."""
    pending = list(datasets)
    while pending:
        assoc = _ae().associate("127.0.0.1", port, ae_title=aet)
        if not assoc.is_established:
            if not retry:
                raise SystemExit(f"no association with {aet}")
            time.sleep(0.2)
            continue
        try:
            while pending:
                status = assoc.send_c_store(pending[0])
                if getattr(status, "Status", None) != 0:
                    if not retry:
                        raise SystemExit(f"C-STORE to {aet} failed")
                    break
                pending.pop(0)
        finally:
            if assoc.is_established:
                assoc.release()


def latency(orthanc: Orthanc, pictures: list[np.ndarray]) -> list[float]:
    """Seconds from C-STORE to the study's SR being found in Orthanc, one study at a time."""
    out = []
    for i, pixels in enumerate(pictures):
        ds = wrap(pixels, i)
        t0 = time.perf_counter()
        store(orthanc.dicom, "ORTHANC", [ds])
        while not orthanc.find_sr(ds.StudyInstanceUID):
            if time.perf_counter() - t0 > 60:
                raise SystemExit("no SR within 60 s")
            time.sleep(0.01)
        out.append(time.perf_counter() - t0)
    return out


def burst(orthanc: Orthanc, pictures: list[np.ndarray], *, node: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send a burst (to Orthanc, or straight to the node with a kill and restart); rate, lost and duplicated."""
    datasets = [wrap(p, 100000 + i) for i, p in enumerate(pictures)]
    wanted = {str(d.StudyInstanceUID) for d in datasets}
    before = set(orthanc.sr_studies())
    t0 = time.perf_counter()
    killed_at = None
    if node is None:
        store(orthanc.dicom, "ORTHANC", datasets)
    else:
        import threading

        sender = threading.Thread(target=store, args=(node["port"], "MEDCLASS", datasets), kwargs={"retry": True})
        sender.start()
        while len(orthanc.find_sr()) - len(before) < len(datasets) // 3:
            time.sleep(0.05)
        node["proc"].send_signal(signal.SIGKILL)
        node["proc"].wait(10)
        killed_at = len(orthanc.find_sr()) - len(before)
        node["proc"] = node["restart"]()
        sender.join()
    end = time.perf_counter() + 300
    while len(orthanc.find_sr()) - len(before) < len(datasets) and time.perf_counter() < end:
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    time.sleep(2.0)  # anything late (a duplicate) arrives
    counts = {uid: n for uid, n in orthanc.sr_studies().items() if uid in wanted}
    return {
        "studies": len(datasets),
        "seconds": seconds,
        "per_second": len(counts) / seconds,
        "lost": len(wanted - set(counts)),
        "duplicated": sum(n > 1 for n in counts.values()),
        **({"srs_before_kill": killed_at} if killed_at is not None else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=30, help="studies for the latency of each model")
    p.add_argument("--burst", type=int, default=200, help="studies in each burst")
    p.add_argument("--settle", type=float, default=0.3, help="the node's --settle seconds")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-pacs", help="where the two runs are kept")
    args = p.parse_args()
    runs = train_runs(args.runs)
    result: dict[str, Any] = {"settle_s": args.settle, "cpu": cpu_description(), "threads": 1}
    with tempfile.TemporaryDirectory(prefix="medclass-bench-pacs-") as tmp:
        for size in (28, 224):
            folder = Path(tmp) / f"px{size}"
            (folder / "orthanc").mkdir(parents=True)
            port = free_port()
            orthanc = Orthanc(folder / "orthanc", port)
            log = folder / "node.log"
            proc = start_node(runs[size], folder / "state", port, orthanc, args.settle, log)
            try:
                pictures = images(size, args.studies + 2)
                latency(orthanc, pictures[:2])  # warm-up: first Grad-CAM, first association
                times = latency(orthanc, pictures[2:])
                result[f"latency_{size}"] = {
                    "n": len(times),
                    "p50_s": float(np.percentile(times, 50)),
                    "p99_s": float(np.percentile(times, 99)),
                }
                print(f"{size} px latency: {result[f'latency_{size}']}", flush=True)
                if size == 28:
                    many = (images(28, args.burst) * 2)[: args.burst]
                    result["burst_28"] = burst(orthanc, many)
                    print(f"burst: {result['burst_28']}", flush=True)
                    node = {"port": port, "proc": proc}
                    node["restart"] = partial(start_node, runs[28], folder / "state", port, orthanc, args.settle, log)
                    result["kill_28"] = burst(orthanc, many, node=node)
                    proc = node["proc"]
                    print(f"kill/restart: {result['kill_28']}", flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                orthanc.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    write_section(result, args)


def write_section(r: dict[str, Any], args: argparse.Namespace) -> None:
    def ok(value: float, target: float, above: bool = False) -> str:
        return "met" if (value > target if above else value <= target) else "**missed**"

    l28, l224, b, k = r["latency_28"], r["latency_224"], r["burst_28"], r["kill_28"]
    body = f"""
`OMP_NUM_THREADS=1 python bench/pacs.py --studies {args.studies} --burst {args.burst} --settle {args.settle}` on
{r["cpu"]} (2 cores shared; node on one thread). Orthanc 1.10 (Debian) routes each stored image to `medclass node`
by Lua; the node waits `--settle {args.settle}` s for more instances of the series, classifies, draws Grad-CAM,
and stores SR + heat-map SC back by C-STORE (and the study's triage metadata by REST). The settle time is
part of the latency: the node's default `--settle 1` adds about 0.7 s to these figures.

| measure | 28 px (`default`, smallcnn) | 224 px (`hires`, smallcnn_hr) | target |
|---|---|---|---|
| latency p50, C-STORE -> SR in Orthanc ({l28["n"]} studies) | {l28["p50_s"]:.2f} s | {l224["p50_s"]:.2f} s | \
<= 1 s / <= 2 s: {ok(l28["p50_s"], 1.0)} / {ok(l224["p50_s"], 2.0)} |
| latency p99 | {l28["p99_s"]:.2f} s | {l224["p99_s"]:.2f} s | |

| burst of {b["studies"]} one-image studies (28 px) | studies/s | lost | duplicated | target |
|---|---|---|---|---|
| through Orthanc's routing | {b["per_second"]:.2f} ({b["seconds"]:.0f} s) | {b["lost"]} | {b["duplicated"]} | \
> 1 study/s, 0 lost, 0 duplicated: {ok(b["per_second"], 1.0, above=True)} |
| straight to the node, node SIGKILLed after {k["srs_before_kill"]} SRs and restarted | {k["per_second"]:.2f} | \
{k["lost"]} | {k["duplicated"]} | 0 lost, 0 duplicated |

The kill run's sender re-sends whatever the node did not acknowledge, as a PACS's forwarding queue does;
the node acknowledges an instance only once it is on disk and in its queue. Orthanc 1.10's Lua
`SendToModality` does not retry, so instances Orthanc routes while the node is down would need its
re-send (a job resubmission) in production; see the README's "Connect to a PACS".
"""
    update_section("pacs", "PACS node: C-STORE to SR in Orthanc", body)


if __name__ == "__main__":
    main()
