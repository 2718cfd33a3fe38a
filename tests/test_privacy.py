"""No raw patient identifier reaches any file medclass writes or any line it prints.

A folder of DICOM files whose PatientID and PatientName are set goes through every command that
reads clinical data: index, split, audit, train (on the manifest and on the folder), evaluate and
predict. Every file under the output folders and everything printed is searched for the raw values.

The identifiers are random and at least 16 characters long, so that they cannot occur by chance in
binary data (a 3-byte name like "Roe" does, now and then, in a safetensors file's weights). What is
searched: every text file whole (JSON, YAML, CSV, HTML, ...), the JSON header of safetensors files
(tensor names and metadata: where text can hide in them), and any other file's bytes.
"""

from __future__ import annotations

import json
import secrets
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

_TOKEN = secrets.token_hex(8)  # 16 hex digits, new on every run
PATIENT_ID = f"PAT-RAW-{_TOKEN}"
FAMILY, GIVEN = f"Roe{_TOKEN}", f"Richard{_TOKEN[::-1]}"
RAW = (PATIENT_ID, f"{FAMILY}^{GIVEN}", FAMILY, GIVEN)
assert min(len(r) for r in RAW) >= 16


def _dicom_folder(root: Path, make_dicom) -> Path:
    rng = np.random.default_rng(0)
    for i in range(24):
        label = "effusion" if i % 2 else "normal"
        img = rng.integers(0, 1000, (16, 16))
        if i % 2:
            img[4:12, 4:12] += 2000  # a bright block: something to learn
        pid = PATIENT_ID if i < 4 else f"PAT-{i // 2:03d}"
        make_dicom(root / label / f"img{i:02d}.dcm", img, patient_id=pid, patient_name=RAW[1])
    return root


def _searchable(path: Path) -> bytes:
    """What a file can leak through: a safetensors file's JSON header; any other file whole."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        (size,) = struct.unpack("<Q", data[:8])
        header = data[8 : 8 + size]
        json.loads(header)  # a real header, not a guess at the layout
        return header
    return data


def _leaks(folder: Path) -> list[str]:
    found = []
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            data = _searchable(f)
            found += [f"{f}: {r}" for r in RAW if r.encode() in data]
    return found


def test_the_search_finds_a_planted_identifier(tmp_path):
    (tmp_path / "a.csv").write_text(f"source,label\nscan-{FAMILY}.dcm,1\n")
    (tmp_path / "m.json").write_text(json.dumps({"dataset": {"name": PATIENT_ID}}))
    (tmp_path / "c.yaml").write_text("data:\n  spec: folder\n")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"), metadata={"state": json.dumps([GIVEN])})
    assert _leaks(tmp_path) == [
        f"{tmp_path / 'a.csv'}: {FAMILY}",
        f"{tmp_path / 'm.json'}: {PATIENT_ID}",
        f"{tmp_path / 'model.safetensors'}: {GIVEN}",
    ]
    # the tensor bytes are not text: a weight that happens to spell a short name is no leak
    save_file({"w": torch.frombuffer(bytearray(b"Roe\0"), dtype=torch.float32)}, str(tmp_path / "model.safetensors"))
    assert len(_leaks(tmp_path)) == 2


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
    assert (out / "run-folder" / "model.safetensors").is_file() and (out / "run-folder" / "model.json").is_file()
    assert not _leaks(out)
    assert not [r for r in RAW for text in printed if r in text]
