"""``medclass index``: one row per image (readable or not), hashed patients, a manifest training can read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data.files import read_manifest
from medclass.data.index import INDEX_COLUMNS, index_folder, patient_hash

SECRET_ID = "MRN-4711-SECRET"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def folder(tmp_path: Path, make_dicom) -> Path:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        (root / "train" / label).mkdir(parents=True)
    for i in range(6):
        label = "PNEUMONIA" if i % 2 else "NORMAL"
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "train" / label / f"p{i}_x.png")
    make_dicom(root / "train" / "NORMAL" / "IMG0001", rng.integers(0, 4095, (20, 24)), patient_id=SECRET_ID)
    make_dicom(root / "train" / "PNEUMONIA" / "b.dcm", rng.integers(0, 4095, (20, 24)), patient_id="OTHER-77")
    (root / "train" / "NORMAL" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")
    (root / "train" / "NORMAL" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (root / "notes.txt").write_text("not an image")
    (root / "train" / "README").write_text("not an image either")
    return root


def test_one_row_per_image_with_reasons(folder, tmp_path):
    out = tmp_path / "manifest.csv"
    summary = index_folder(folder, out, salt="s3cret", progress=False)
    rows = _rows(out)
    assert list(rows[0]) == list(INDEX_COLUMNS)
    assert summary["rows"] == len(rows) == 10 and summary["readable"] == 8 and summary["unreadable"] == 2
    by_name = {Path(r["path"]).name: r for r in rows}
    assert "notes.txt" not in by_name and "README" not in by_name
    for bad in ("broken.dcm", "cut.png"):
        assert by_name[bad]["readable"] == "false" and by_name[bad]["error"], by_name[bad]
    dcm = by_name["IMG0001"]
    assert dcm["format"] == "dicom" and dcm["modality"] == "CR" and dcm["body_part"] == "CHEST"
    assert dcm["view_position"] == "PA" and dcm["rows"] == "20" and dcm["columns"] == "24" and dcm["frames"] == "1"
    assert dcm["study_uid"] and dcm["series_uid"] and dcm["label"] == "NORMAL"
    assert dcm["patient_id"] == patient_hash(SECRET_ID, b"s3cret") != by_name["b.dcm"]["patient_id"]
    assert by_name["p1_x.png"]["label"] == "PNEUMONIA" and by_name["p1_x.png"]["patient_id"] == ""
    for r in rows:  # paths resolve against the manifest's folder
        assert (out.parent / r["path"]).is_file()
    text = out.read_text()
    assert SECRET_ID not in text and "Doe" not in text and "Jane" not in text  # make_dicom's PatientName


def test_salt_makes_hashes_stable_or_unlinkable(folder, tmp_path):
    a = _rows(Path(index_folder(folder, tmp_path / "a.csv", salt="k", progress=False)["out"]))
    b = _rows(Path(index_folder(folder, tmp_path / "b.csv", salt="k", progress=False)["out"]))
    c = _rows(Path(index_folder(folder, tmp_path / "c.csv", progress=False)["out"]))  # random salt
    pid = [r["patient_id"] for r in a if r["patient_id"]]
    assert pid == [r["patient_id"] for r in b if r["patient_id"]]
    assert not set(pid) & {r["patient_id"] for r in c}


def test_patient_pattern_for_plain_images(folder, tmp_path):
    out = tmp_path / "m.csv"
    index_folder(folder, out, salt="k", patient_pattern=r"(p\d+)_", progress=False)
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert rows["p3_x.png"]["patient_id"] == patient_hash("p3", b"k")
    assert rows["IMG0001"]["patient_id"] == patient_hash(SECRET_ID, b"k")  # DICOM header wins


def test_manifest_trains_as_is(folder, tmp_path):
    out = tmp_path / "sub" / "m.csv"
    index_folder(folder, out, salt="k", progress=False)
    table = read_manifest(out)
    assert len(table.paths) == 8 and table.label_names == ["NORMAL", "PNEUMONIA"]
    assert all(p.is_file() for p in table.paths)


def test_cli_index_and_errors(folder, tmp_path, run_cli):
    res = run_cli("index", folder, "--out", tmp_path / "m.csv", "--quiet")
    assert res.code == 0, res.err
    assert "indexed 10 images (8 readable, 2 unreadable" in res.out and "random salt" in res.err
    assert SECRET_ID not in res.out + res.err
    missing = run_cli("index", tmp_path / "nowhere", "--out", tmp_path / "x.csv")
    assert missing.code == 2 and "nowhere: not a folder" in missing.err
    bad = run_cli("index", folder, "--patient-pattern", "(", "--out", tmp_path / "x.csv")
    assert bad.code == 2 and "invalid regular expression" in bad.err


def test_real_dicom_folder_lists_every_file(shared_data, tmp_path):
    out = tmp_path / "dicom.csv"
    summary = index_folder(shared_data / "dicom", out, salt="k", progress=False)
    rows = _rows(out)
    assert summary["rows"] == len(rows) == 63  # manifest.csv is not an image
    assert {r["format"] for r in rows} == {"dicom"}
    failed = [(r["path"], r["error"]) for r in rows if r["readable"] != "true"]
    assert not failed


@pytest.mark.slow
def test_ten_thousand_files(tmp_path):
    root = tmp_path / "many"
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(png)
    data = png.read_bytes()
    for i in range(10_000):
        d = root / ("a" if i % 2 else "b") / f"{i // 1000}"
        if i % 1000 < 2:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.png").write_bytes(data)
    summary = index_folder(root, tmp_path / "m.csv", salt="k", progress=False)
    assert summary["rows"] == summary["readable"] == 10_000
    assert {r["label"] for r in _rows(tmp_path / "m.csv")} == {"a", "b"}  # the class folder, not the nested one
