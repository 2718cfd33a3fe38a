"""Classical baselines: features against naive references, and HOG/LBP/SIFT/ORB + SVM runs saved without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclass.classical.features import bovw_histograms, dense_descriptors, hog, lbp, lbp_codes
from medclass.predict import Predictor


def _naive_lbp(img: np.ndarray) -> np.ndarray:
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
    out = np.zeros((img.shape[0] - 2, img.shape[1] - 2), dtype=int)
    for r in range(1, img.shape[0] - 1):
        for c in range(1, img.shape[1] - 1):
            bits = [int(img[r + dy, c + dx] >= img[r, c]) for dy, dx in offsets]
            changes = sum(bits[i] != bits[i - 1] for i in range(8))
            out[r - 1, c - 1] = sum(bits) if changes <= 2 else 9
    return out


def test_lbp_codes_match_the_definition():
    img = np.random.default_rng(0).integers(0, 255, (1, 9, 11)).astype(np.uint8)
    np.testing.assert_array_equal(lbp_codes(img)[0], _naive_lbp(img[0]))
    flat = np.full((1, 5, 5), 7, np.uint8)
    assert (lbp_codes(flat) == 8).all()  # every neighbour >= the centre
    spot = flat.copy()
    spot[0, 2, 2] = 200
    assert lbp_codes(spot)[0, 1, 1] == 0  # a bright spot: no neighbour as bright
    feats = lbp(img, grid=2)
    assert feats.shape == (1, 40) and np.allclose(feats.reshape(4, 10).sum(1), 1)


def test_hog_responds_to_edge_direction():
    vertical = np.zeros((1, 16, 16), np.uint8)
    vertical[:, :, 8:] = 255  # a vertical edge: horizontal gradient, orientation 0 degrees
    horizontal = vertical.transpose(0, 2, 1).copy()
    fv, fh = hog(vertical), hog(horizontal)
    assert fv.shape == fh.shape == (1, 3 * 3 * 2 * 2 * 9)  # 4x4 cells of 4 px, 3x3 blocks of 2x2 cells
    bins_v = fv.reshape(-1, 9).sum(0)
    bins_h = fh.reshape(-1, 9).sum(0)
    assert bins_v.argmax() in (0, 8) and bins_h.argmax() in (4, 5)  # 0/180 degrees against 90 degrees


def test_bovw_by_hand_and_dense_descriptors():
    vocab = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
    desc = [np.array([[1, 1], [9, 9], [8, 11]], np.float32), np.zeros((0, 2), np.float32)]
    np.testing.assert_allclose(bovw_histograms(desc, vocab), [[1 / 3, 2 / 3], [0, 0]])
    images = np.random.default_rng(1).integers(0, 255, (2, 28, 28)).astype(np.uint8)
    sift, orb = dense_descriptors(images, "sift"), dense_descriptors(images, "orb")
    assert sift[0].shape[1] == 128 and len(sift[0]) > 4
    assert orb[0].shape[1] == 256 and set(np.unique(orb[0])) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", ["hog-svm", "lbp-svm", "sift-bovw-svm", "orb-bovw-svm"])
def test_train_save_reload_predict(kind, tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(60, 30, 30), size=16)
    run = tmp_path / "run"
    res = run_cli("train", "--data", data, "--config", fast_config, "--model", f"classical/{kind}", "--out", run)
    assert res.code == 0, res.err
    meta = json.loads((run / "model.json").read_text())
    assert meta["architecture"]["name"] == f"classical/{kind}" and meta["calibration"]["method"] == "temperature"
    assert b"pickle" not in (run / "model.safetensors").read_bytes()[:200]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["splits"]["test"]["auc"] <= 1
    pred = Predictor.from_checkpoint(run)
    images = np.load(data)["test_images"][:5]
    a, _ = pred.predict_array(images)
    b, _ = Predictor.from_checkpoint(run).predict_array(images)
    np.testing.assert_allclose(a, b)
    occ = run_cli("explain", "--checkpoint", run, data, "--method", "occlusion", "--out", tmp_path / "maps")
    assert occ.code == 0, occ.err
    grad = run_cli("explain", "--checkpoint", run, data, "--method", "integrated-gradients", "--out", tmp_path / "m2")
    assert grad.code == 2 and "use --method occlusion" in grad.err


def test_unknown_classical_model(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", fast_config, "--model", "classical/gabor-svm", "--out", tmp_path)
    assert res.code == 2 and "unknown classical model 'classical/gabor-svm'" in res.err
