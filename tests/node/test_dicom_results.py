"""The node's DICOM results: the SR field by field, the heat-map Secondary Capture, both read back by pydicom and
checked by dciodvfy when it is installed (``.ci/run`` installs it)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medclass.node.dicom_results import DISCLAIMER, SeriesResult, build_sc, build_sr, derived_uid

MODEL = {
    "name": "resnet18_28",
    "version": "0.1.0",
    "training_data": {"name": "pneumoniamnist", "md5": "28209eda62fecd6e6a2d98b1501bb15f"},
    "intended_use": "Decision support for trained readers.",
}


def _result(refer: bool | None = True) -> SeriesResult:
    return SeriesResult(
        label="pneumonia",
        probs={"normal": 0.125, "pneumonia": 0.875},
        threshold=0.42,
        urgency=0.875,
        refer=refer,
        model=MODEL,
        triage_classes=["pneumonia"],
    )


def _sources(make_dicom, tmp_path: Path, n: int = 2) -> list[pydicom.Dataset]:
    first = pydicom.dcmread(make_dicom(tmp_path / "a.dcm", np.full((16, 16), 100), patient_id="P-77"))
    out = [first]
    for i in range(1, n):  # more instances of the same series
        ds = pydicom.dcmread(make_dicom(tmp_path / f"{i}.dcm", np.full((16, 16), 100), patient_id="P-77"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
        out.append(ds)
    return out


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _items(sr: pydicom.Dataset) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = {}
    for item in sr.ContentSequence:
        out.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return out


def test_sr_joins_the_source_study_and_holds_every_field(make_dicom, tmp_path):
    sources = _sources(make_dicom, tmp_path)
    series = sources[0].SeriesInstanceUID
    sr = _roundtrip(build_sr(_result(), sources, series))

    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.Modality == "SR"
    assert (sr.PatientID, sr.PatientName) == ("P-77", "Doe^Jane")
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sr.SeriesInstanceUID not in {series, sr.StudyInstanceUID}
    assert sr.SOPInstanceUID == derived_uid(series, "sr")
    assert DISCLAIMER in sr.SeriesDescription
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"

    items = _items(sr)
    assert items["Finding"][0].ConceptCodeSequence[0].CodeValue == "pneumonia"
    prob = items["Calibrated probability of pneumonia"][0].MeasuredValueSequence[0]
    assert float(prob.NumericValue) == pytest.approx(0.875)
    assert prob.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert float(items["Calibrated probability of normal"][0].MeasuredValueSequence[0].NumericValue) == 0.125
    assert float(items["Operating threshold"][0].MeasuredValueSequence[0].NumericValue) == pytest.approx(0.42)
    assert float(items["Urgency (triage key)"][0].MeasuredValueSequence[0].NumericValue) == pytest.approx(0.875)
    referral = items["Referral to a radiologist"][0].ConceptCodeSequence[0]
    assert (referral.CodingSchemeDesignator, referral.CodeValue, referral.CodeMeaning) == ("SCT", "373066001", "Yes")
    assert items["Algorithm Name"][0].TextValue == "resnet18_28"
    assert items["Algorithm Version"][0].TextValue == "0.1.0"
    assert "pneumoniamnist" in items["Training data"][0].TextValue
    assert "28209eda62fecd6e6a2d98b1501bb15f" in items["Training data"][0].TextValue
    assert items["Intended use"][0].TextValue.startswith(DISCLAIMER)
    assert {i.RelationshipType for i in sr.ContentSequence} == {"CONTAINS"}

    refs = items["Source of Measurement"]
    assert [r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in refs] == [s.SOPInstanceUID for s in sources]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sources[0].StudyInstanceUID
    listed = {i.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert listed == {s.SOPInstanceUID for s in sources}
    schemes = {s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence}
    assert "99MEDCLASS" in schemes


def test_sr_without_referral_says_no_and_is_the_same_instance_when_built_again(make_dicom, tmp_path):
    sources = _sources(make_dicom, tmp_path, n=1)
    series = sources[0].SeriesInstanceUID
    a = build_sr(_result(refer=False), sources, series)
    b = build_sr(_result(refer=False), sources, series)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    items = _items(_roundtrip(a))
    assert items["Referral to a radiologist"][0].ConceptCodeSequence[0].CodeMeaning == "No"


def test_sc_is_a_labelled_rgb_picture_in_the_study_that_references_its_source(make_dicom, tmp_path):
    src = _sources(make_dicom, tmp_path, n=1)[0]
    overlay = np.zeros((16, 16, 3), np.uint8)
    overlay[:8] = (255, 0, 0)
    sc = _roundtrip(build_sc(_result(), overlay, src, src.SeriesInstanceUID))

    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.PatientID == src.PatientID
    assert sc.SOPInstanceUID == derived_uid(src.SeriesInstanceUID, "sc")
    assert sc.BurnedInAnnotation == "YES" and DISCLAIMER in sc.SeriesDescription
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    pixels = sc.pixel_array
    assert sc.PhotometricInterpretation == "RGB" and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[1] >= 384  # scaled up so the banner is legible
    banner = pixels[:40]
    assert (banner[..., 0] > 200).any() and (banner[..., 2] < 50).any()  # yellow/white text on black
    assert tuple(pixels[60, 0]) == (255, 0, 0) and tuple(pixels[-1, 0]) == (0, 0, 0)  # the overlay, under the banner


def test_dciodvfy_finds_no_errors(make_dicom, tmp_path):
    if shutil.which("dciodvfy") is None:
        why = os.environ.get("MEDCLASS_NO_ORTHANC") or "dciodvfy (dicom3tools) is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"dciodvfy must run in CI: {why}")
        pytest.skip(why)
    src = _sources(make_dicom, tmp_path, n=1)[0]
    for name, ds in (
        ("sr.dcm", build_sr(_result(), [src], src.SeriesInstanceUID)),
        ("sc.dcm", build_sc(_result(), np.zeros((16, 16, 3), np.uint8), src, src.SeriesInstanceUID)),
    ):
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{name}: {errors}"
