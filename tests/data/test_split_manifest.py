"""``medclass split``: a split column by patient, stratified, seeded; unreadable rows left out."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from medclass.data.splits import split_manifest
from medclass.errors import DataError


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _manifest(tmp_path: Path, n_patients: int = 200) -> Path:
    rows = []
    for p in range(n_patients):
        label = "PNEUMONIA" if p % 4 else "NORMAL"  # 75 % / 25 %
        for k in range(1 + p % 3):  # 1-3 images per patient
            rows.append({"path": f"{p}_{k}.png", "readable": "true", "patient_id": f"h{p:04d}", "label": label})
    rows.append({"path": "bad.dcm", "readable": "false", "patient_id": "", "label": ""})
    return _write(tmp_path / "m.csv", rows)


def test_no_patient_in_two_splits_and_proportions_kept(tmp_path):
    src = _manifest(tmp_path)
    summary = split_manifest(src, tmp_path / "out.csv", by="patient", stratify="label", val=0.1, test=0.2, seed=3)
    rows = _read(tmp_path / "out.csv")
    assert [r["path"] for r in rows] == [r["path"] for r in _read(src)]  # same rows, same order
    split_of: dict[str, set[str]] = {}
    for r in rows:
        if r["readable"] == "true":
            split_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    patients = Counter(next(iter(s)) for s in split_of.values())
    assert abs(patients["test"] / 200 - 0.2) < 0.02 and abs(patients["val"] / 200 - 0.1) < 0.02
    for name in ("train", "val", "test"):
        labels = Counter(r["label"] for r in rows if r["split"] == name)
        share = labels["NORMAL"] / sum(labels.values())
        assert abs(share - 0.25) < 0.06, (name, labels)
        assert summary[name]["rows"] == sum(labels.values())
    assert [r["split"] for r in rows if r["readable"] == "false"] == [""]


def test_seed_changes_the_split_and_is_reproducible(tmp_path):
    src = _manifest(tmp_path)
    split_manifest(src, tmp_path / "a.csv", seed=1)
    split_manifest(src, tmp_path / "b.csv", seed=1)
    split_manifest(src, tmp_path / "c.csv", seed=2)
    a, b, c = (_read(tmp_path / f"{x}.csv") for x in "abc")
    assert a == b and a != c


def test_existing_split_column_is_replaced_in_place(tmp_path):
    rows = [{"path": f"{i}.png", "label": str(i % 2), "patient_id": f"p{i}", "split": "train"} for i in range(50)]
    src = _write(tmp_path / "m.csv", rows)
    split_manifest(src, src, test=0.3, val=0.1)
    out = _read(src)
    assert list(out[0]) == ["path", "label", "patient_id", "split"]
    assert 14 <= Counter(r["split"] for r in out)["test"] <= 16  # 30 % of each class, rounded


def test_errors_name_the_file(tmp_path):
    src = _write(tmp_path / "m.csv", [{"path": "a.png", "label": "x"}])
    with pytest.raises(DataError, match=r"m\.csv: no column 'patient_id'"):
        split_manifest(src, tmp_path / "o.csv", by="patient")
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        split_manifest(tmp_path / "missing.csv", tmp_path / "o.csv")


def test_cli_split(tmp_path, run_cli):
    src = _manifest(tmp_path, 40)
    res = run_cli("split", src, "--by", "patient", "--stratify", "label", "--val", "0.1", "--test", "0.2")
    assert res.code == 0, res.err
    assert "no patient is in two splits" in res.out and "test" in res.out
    assert {r["split"] for r in _read(src)} == {"train", "val", "test", ""}
    bad = run_cli("split", src, "--by", "hospital")
    assert bad.code == 2 and "no column 'hospital'" in bad.err


def test_paths_stay_valid_when_written_elsewhere(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    rows = []
    for i in range(10):
        (tmp_path / "data" / "img" / f"{i}.png").write_bytes(b"x")
        rows.append({"path": f"img/{i}.png", "label": str(i % 2), "patient_id": f"p{i}"})
    src = _write(tmp_path / "data" / "m.csv", rows)
    split_manifest(src, tmp_path / "out" / "deep" / "m.csv", val=0.2, test=0.2)
    for r in _read(tmp_path / "out" / "deep" / "m.csv"):
        assert (tmp_path / "out" / "deep" / r["path"]).resolve() == (tmp_path / "data" / "img" / Path(r["path"]).name)
