"""The node against a real PACS: Orthanc routes the 63 real DICOM files and chest X-rays (wrapped as DICOM) to the
node, which stores a Structured Report and a heat-map Secondary Capture in each source study; the tests read
them back from Orthanc's REST API. Also: the worklist and Orthanc's triage metadata, duplicate delivery, a
malformed object, STOW-RS, and that no log line names a patient."""

from __future__ import annotations

import io
import logging
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from medclass.node.dicom_results import DISCLAIMER

from .conftest import NODE_AET, ORTHANC_AET, Orthanc, wait_for

CHEST = ["nih_chestxray14/00000001_000.png", "nih_chestxray14/00027426_000.png"]
KERMANY = ["test/NORMAL/IM-0001-0001.jpeg", "test/NORMAL/IM-0003-0001.jpeg"]


def wrap_as_dicom(image_file: Path, patient_id: str, patient_name: str) -> bytes:
    """A chest X-ray picture as a DX-modality Secondary Capture in a study of its own (8-bit grey)."""
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(Image.open(image_file).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("wrapped", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "DX", "CHEST", "test-wrapper"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def c_store(port: int, datasets: list[Any], aet: str = "TESTSCU") -> list[int]:
    """C-STORE datasets straight to the node; the status of each."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    for uid in {str(d.SOPClassUID) for d in datasets}:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def pacs(orthanc: Orthanc, small_binary_run, shared_data: Path, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Orthanc with every file sent and the node done with them; what was sent, and the node."""
    import medclass
    from medclass.node.pacs import DicomSender, OrthancMarker
    from medclass.node.scp import Node

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    run, _ = small_binary_run
    state = tmp_path_factory.mktemp("node-state")
    node = Node(
        medclass.load(run),
        state,
        DicomSender("127.0.0.1", orthanc.dicom_port, ORTHANC_AET, calling_aet=NODE_AET),
        port=orthanc.node_port,
        host="127.0.0.1",
        marker=OrthancMarker(orthanc.url),
        settle_s=0.3,
    )
    node.start()
    files = sorted((shared_data / "dicom").rglob("*.dcm"))
    assert len(files) == 63
    blobs = [f.read_bytes() for f in files]
    wrapped = {}
    for i, rel in enumerate(CHEST + KERMANY):
        folder = "chest_xray_samples" if rel in CHEST else "chest_xray_kermany224"
        wrapped[rel] = wrap_as_dicom(shared_data / folder / rel, f"MCPAT-{i:04d}", f"Testpatient^Number{i}")
    blobs += list(wrapped.values())
    identities = set()
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True, force=True)
        identities |= {str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))}
    stored = []
    for blob in blobs:
        try:
            stored.append(orthanc.upload(blob))
        except urllib.error.HTTPError:  # a file Orthanc itself refuses never reaches the node
            stored.append({"Status": "Refused"})
    routed = sum(s.get("Status") == "Success" for s in stored)
    assert routed >= 50

    def settled() -> bool:
        c = node.queue.counts()
        return c["instances"] + c["rejected"] >= routed and not c.get("pending") and not c.get("working")

    try:
        wait_for(settled, f"the node to take and classify {routed} routed instances", timeout=120)
        yield {
            "node": node,
            "orthanc": orthanc,
            "routed": routed,
            "wrapped": wrapped,
            "identities": {v for v in identities if len(v) >= 4},
            "logs": records,
            "run": run,
        }
    finally:
        node.stop()
        root.removeHandler(handler)
        root.setLevel(old_level)


def _results_of(orthanc: Orthanc, study_uid: str, modality: str) -> list[pydicom.Dataset]:
    ids = orthanc.find("Instance", {"StudyInstanceUID": study_uid, "Modality": modality})
    return [pydicom.dcmread(io.BytesIO(orthanc.file(i))) for i in ids]


def test_every_series_gets_one_sr_and_one_sc_in_its_own_study(pacs):
    orthanc, node = pacs["orthanc"], pacs["node"]
    done = node.queue.series_rows(("done",))
    failed = node.queue.series_rows(("failed",))
    assert len(done) >= 20, f"only {len(done)} series classified; failed: {[f['error'] for f in failed]}"
    srs = orthanc.find("Instance", {"Modality": "SR"})
    assert len(srs) == len(done)  # one report per classified series, none for a failed one
    for row in done:
        reports = [
            sr
            for sr in _results_of(orthanc, row["study_uid"], "SR")
            if sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID
            == row["series_uid"]
        ]
        assert len(reports) == 1
        assert reports[0].SOPInstanceUID == row["result"]["sr_uid"]
    for row in failed:  # unreadable or unfit series fail alone, with a reason that names no patient
        assert row["error"] and not any(v in row["error"] for v in pacs["identities"])


def test_sr_of_a_chest_xray_holds_the_predictors_numbers(pacs):
    import medclass

    orthanc = pacs["orthanc"]
    blob = pacs["wrapped"][CHEST[0]]
    src = pydicom.dcmread(io.BytesIO(blob))
    (sr,) = _results_of(orthanc, src.StudyInstanceUID, "SR")
    assert (sr.PatientID, str(sr.PatientName), sr.StudyInstanceUID) == (
        src.PatientID,
        str(src.PatientName),
        src.StudyInstanceUID,
    )
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in sr.ContentSequence}
    predictor = medclass.load(pacs["run"])
    path = Path(pacs["run"]).parent / "wrapped.dcm"
    path.write_bytes(blob)
    (record,) = predictor.predict(path)
    assert items["Finding"].ConceptCodeSequence[0].CodeValue == record["label"]
    for name, p in record["probs"].items():
        value = float(items[f"Calibrated probability of {name}"].MeasuredValueSequence[0].NumericValue)
        assert value == pytest.approx(p, abs=1e-6)
    threshold = float(items["Operating threshold"].MeasuredValueSequence[0].NumericValue)
    assert threshold == pytest.approx(float(predictor.threshold))
    assert items["Referral to a radiologist"].ConceptCodeSequence[0].CodeMeaning == ("Yes" if record["refer"] else "No")
    assert items["Intended use"].TextValue.startswith(DISCLAIMER)
    assert items["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    (sc,) = _results_of(orthanc, src.StudyInstanceUID, "OT")
    assert sc.PatientID == src.PatientID and sc.BurnedInAnnotation == "YES"
    assert sc.pixel_array.shape[2] == 3 and sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_worklist_ranks_studies_and_orthanc_carries_the_triage_metadata(pacs):
    from medclass.node.worklist import read_worklist

    orthanc, node = pacs["orthanc"], pacs["node"]
    rows = read_worklist(node.queue.folder)
    assert len(rows) == len({r["study_uid"] for r in node.queue.series_rows(("done",))})
    keys = [(not r["refer"], -r["urgency"]) for r in rows]
    assert keys == sorted(keys)
    for row in rows[:5]:
        (study_id,) = [f["ID"] for f in orthanc.post("/tools/lookup", row["study_uid"].encode(), "text/plain")]
        urgency = orthanc.get(f"/studies/{study_id}/metadata/medclass-urgency")
        assert float(urgency) == pytest.approx(row["urgency"], abs=1e-4)
        triage = orthanc.get(f"/studies/{study_id}/metadata/medclass-triage").decode()
        assert triage.startswith("refer" if row["refer"] else "routine")


def test_duplicates_give_no_second_report_and_a_malformed_object_is_refused(pacs):
    orthanc, node = pacs["orthanc"], pacs["node"]
    before = node.queue.counts()
    srs_before = len(orthanc.find("Instance", {"Modality": "SR"}))
    again = pydicom.dcmread(io.BytesIO(pacs["wrapped"][CHEST[1]]))
    assert c_store(node.port, [again, again]) == [0, 0]  # re-sent twice straight to the node
    assert orthanc.upload(pacs["wrapped"][CHEST[1]])["Status"] == "AlreadyStored"

    broken = pydicom.dcmread(io.BytesIO(pacs["wrapped"][KERMANY[0]]))
    del broken.SeriesInstanceUID
    broken.SOPInstanceUID = pydicom.uid.generate_uid()
    truncated = pydicom.dcmread(io.BytesIO(pacs["wrapped"][KERMANY[1]]))
    truncated.SOPInstanceUID, truncated.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    truncated.PixelData = truncated.PixelData[:100]
    assert c_store(node.port, [broken, truncated]) == [0xC210, 0]
    wait_for(lambda: node.queue.counts().get("failed", 0) > before.get("failed", 0), "the truncated series to fail")
    after = node.queue.counts()
    assert after["instances"] == before["instances"] + 1 and after["rejected"] == before["rejected"] + 1
    assert after["done"] == before["done"]
    assert len(orthanc.find("Instance", {"Modality": "SR"})) == srs_before

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET)
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0  # still serving
    assoc.release()


def test_stow_rs_stores_results_through_dicomweb(pacs, make_dicom, tmp_path):
    from medclass.node.dicom_results import SeriesResult, build_sr
    from medclass.node.pacs import StowSender

    if not orthanc_has_dicomweb(pacs["orthanc"]):
        pytest.skip("Orthanc's DICOMweb plugin (orthanc-dicomweb) is not installed")
    src = pydicom.dcmread(make_dicom(tmp_path / "s.dcm", np.full((8, 8), 5)))
    result = SeriesResult("1", {"0": 0.3, "1": 0.7}, 0.5, 0.7, False, {"name": "m", "version": "0"})
    sr = build_sr(result, [src], src.SeriesInstanceUID)
    StowSender(pacs["orthanc"].url + "/dicom-web").send([sr])
    assert pacs["orthanc"].find("Instance", {"SOPInstanceUID": sr.SOPInstanceUID})


def orthanc_has_dicomweb(orthanc: Orthanc) -> bool:
    return "dicom-web" in orthanc.get("/plugins")


def test_no_log_line_names_a_patient(pacs):
    identities = pacs["identities"]
    assert any(v.startswith("MCPAT-") for v in identities)
    lines = [r.getMessage() for r in pacs["logs"]]
    assert any("done in" in line for line in lines)
    leaks = [(v, line) for line in lines for v in identities if v in line]
    assert not leaks, leaks[:3]
