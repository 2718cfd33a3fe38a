"""No raw patient identifier reaches any file medclass writes or any line it prints.

A folder of DICOM files whose PatientID and PatientName are set goes through every command that
reads clinical data: index, split, audit, train (on the manifest and on the folder), evaluate and
predict. Every file under the output folders and everything printed is searched for the raw values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RAW = ("PAT-RAW-00042", "Roe^Richard", "Roe", "Richard")


def _dicom_folder(root: Path, make_dicom) -> Path:
    rng = np.random.default_rng(0)
    for i in range(24):
        label = "effusion" if i % 2 else "normal"
        img = rng.integers(0, 1000, (16, 16))
        if i % 2:
            img[4:12, 4:12] += 2000  # a bright block: something to learn
        pid = RAW[0] if i < 4 else f"PAT-{i // 2:03d}"
        make_dicom(root / label / f"img{i:02d}.dcm", img, patient_id=pid, patient_name=RAW[1])
    return root


def _leaks(folder: Path) -> list[str]:
    found = []
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f}: {r}" for r in RAW if r.encode() in data]
    return found


def test_no_raw_patient_identifier_anywhere(tmp_path, run_cli, fast_config, make_dicom):
    data = _dicom_folder(tmp_path / "in", make_dicom)
    out = tmp_path / "out"
    printed = []

    def run(*args):
        res = run_cli(*args)
        assert res.code == 0, res.err
        printed.append(res.out + res.err)
        return res

    run("index", data, "--out", out / "manifest.csv", "--salt", "k", "--quiet")
    run("split", out / "manifest.csv", "--by", "patient", "--val", "0.25", "--test", "0.25")
    run("audit", out / "manifest.csv", "--json", out / "audit.json")
    for name, spec in (("run-manifest", out / "manifest.csv"), ("run-folder", data)):
        run("train", "--data", spec, "--config", fast_config, "--out", out / name, "--quiet", "--image-size", "16")
    run("evaluate", "--checkpoint", out / "run-folder", "--data", data, "--n-bootstrap", "10")
    run("predict", "--checkpoint", out / "run-folder", data, "--out", out / "preds.csv")
    assert (out / "preds.csv").read_text().count("\n") == 25
    assert not _leaks(out)
    assert not [r for r in RAW for text in printed if r in text]
