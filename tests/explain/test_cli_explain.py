"""``medclass explain`` end to end: arrays, DICOM and volumes in; overlays, maps and the sanity verdict out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize(("method", "with_arrays"), [("gradcam", True), ("occlusion", False)])  # occlusion: slow
def test_explain_arrays_and_dicom(small_binary_run, run_cli, make_dicom, tmp_path, method, with_arrays):
    run, data = small_binary_run
    dcm = make_dicom(tmp_path / "scan.dcm", (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16))
    out = tmp_path / "maps"
    inputs = [data, dcm] if with_arrays else [dcm]
    res = run_cli("explain", "--checkpoint", run, *inputs, "--method", method, "--out", out)
    assert res.code == 0, res.err
    assert "randomisation check" in res.out
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["method"] == method and len(summary["explanations"]) == (12 if with_arrays else 0) + 1
    assert summary["randomisation"]["passed"] in (True, False)
    last = summary["explanations"][-1]
    assert last["source"].endswith("scan.dcm")
    heat = np.load(out / last["npy"])
    assert heat.shape == (16, 16) and heat.min() >= 0 and heat.max() <= 1
    assert Image.open(out / last["png"]).size == (16, 16)


def test_target_by_name_and_bad_target(small_binary_run, run_cli, tmp_path):
    run, data = small_binary_run
    res = run_cli("explain", "--checkpoint", run, data, "--target", "0", "--out", tmp_path / "m")
    assert res.code == 0, res.err
    assert {e["target"] for e in json.loads((tmp_path / "m" / "explanations.json").read_text())["explanations"]} == {
        "0"
    }
    bad = run_cli("explain", "--checkpoint", run, data, "--target", "tumour", "--out", tmp_path / "n")
    assert bad.code == 2 and "'tumour' is not a class" in bad.err


def test_volumes_give_per_slice_maps(tmp_path, make_npz, train_cli, run_cli):
    data = make_npz(tmp_path / "v.npz", sizes=(20, 6, 6), size=12, depth=8)
    train_cli(data, tmp_path / "run")
    res = run_cli("explain", "--checkpoint", tmp_path / "run", data, "--out", tmp_path / "m")
    assert res.code == 0, res.err
    first = json.loads((tmp_path / "m" / "explanations.json").read_text())["explanations"][0]
    assert np.load(tmp_path / "m" / first["npy"]).shape == (8, 12, 12)
    assert Image.open(tmp_path / "m" / first["png"]).size == (3 * 12, 3 * 12)  # 8 slices in a 3 x 3 grid
