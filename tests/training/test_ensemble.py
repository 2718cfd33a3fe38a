"""Deep ensembles trained as one run: member seeds and budgets, one checkpoint that every command loads, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medclass.checkpoint import load_model
from medclass.config import build_config
from medclass.predict import Predictor
from medclass.training.ensemble import ensemble_history, member_config, member_dir
from medclass.training.transfer import read_weights
from medclass.trust.ensemble import ProbabilityAverage


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, make_npz, fast_config, cli_main):
    root = tmp_path_factory.mktemp("ensemble")
    data = make_npz(root / "d.npz", sizes=(40, 16, 16), size=12)
    args = ["train", "--data", data, "--config", fast_config, "--seed", "1", "--ensemble-size", "2"]
    assert cli_main([*args, "--out", root / "run", "--quiet"]) == 0
    return root / "run", data


def test_member_config_gives_disjoint_seeds_and_shares_the_budget():
    cfg = build_config(overrides={"train": {"ensemble": 3, "seed": 2, "max_minutes": 12.0}})
    members = [member_config(cfg, i, spent_minutes=4.0 * i) for i in range(3)]  # each used its share
    assert [m.train.seed for m in members] == [6, 7, 8]  # seed 1's members are 3, 4, 5: never shared
    assert all(m.train.ensemble == 1 and m.train.max_minutes == pytest.approx(4.0) for m in members)
    assert cfg.train.seed == 2 and cfg.train.ensemble == 3  # the run's own config is untouched
    assert member_config(cfg, 1, spent_minutes=2.0).train.max_minutes == pytest.approx(5.0)  # (12 - 2) / 2
    assert member_config(cfg, 2, spent_minutes=6.5).train.max_minutes == pytest.approx(5.5)  # what is left
    assert member_config(cfg, 2, spent_minutes=13.0).train.max_minutes > 0  # overspent: still a budget, not none
    mixed = build_config(overrides={"train": {"ensemble": 3}, "model": {"members": ["smallcnn", "capsnet"]}})
    assert [member_config(mixed, i).model.name for i in range(3)] == ["smallcnn", "capsnet", "smallcnn"]
    assert member_config(mixed, 1).model.members == []


def test_history_numbers_epochs_through_the_members():
    first, second = [{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 3.0}], [{"epoch": 1, "seconds": 4.0}]
    rows = ensemble_history([first, second])
    assert [(r["epoch"], r["member"], r["seconds"]) for r in rows] == [(1, 0, 2.0), (2, 0, 3.0), (3, 1, 4.0)]


def test_the_run_is_one_checkpoint_averaging_its_calibrated_members(ensemble_run):
    run, data = ensemble_run
    meta = json.loads((run / "model.json").read_text())
    assert meta["deep_ensemble"]["size"] == 2 and meta["deep_ensemble"]["seeds"] == [2, 3]
    assert "calibration" in meta and "conformal" in meta  # refitted on validation for the average
    model, _ = load_model(run)
    assert isinstance(model, ProbabilityAverage) and len(model.members) == 2
    members = [Predictor.from_checkpoint(member_dir(run, i)) for i in range(2)]
    assert all((member_dir(run, i) / "metrics.json").is_file() for i in range(2))
    images = np.load(data)["test_images"][:, None]
    expected = np.mean([m.predict_array(images)[0] for m in members], axis=0)
    whole = Predictor.from_checkpoint(run)
    whole.calibration = None  # the ensemble's own calibration comes on top of the plain average
    np.testing.assert_allclose(whole.predict_array(images)[0], expected, atol=1e-5)
    assert not np.allclose(members[0].predict_array(images)[0], members[1].predict_array(images)[0], atol=1e-3)
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,member,") and len(history) == 1 + 2 * 2  # two epochs per member


def test_predict_evaluate_export_and_explain_accept_an_ensemble_run(ensemble_run, run_cli, tmp_path):
    run, data = ensemble_run
    pred = run_cli("predict", "--checkpoint", run, data)
    assert pred.code == 0, pred.err
    assert len(pred.out.splitlines()) == 1 + 16
    ev = run_cli("evaluate", "--checkpoint", run, "--data", data, "--out", tmp_path / "ev", "--n-bootstrap", "0")
    assert ev.code == 0, ev.err
    ex = run_cli("export", "--checkpoint", run, "--out", tmp_path / "m.onnx")
    assert ex.code == 0, ex.err  # the parity check against PyTorch passed
    images = tmp_path / "x.npy"
    np.save(images, np.load(data)["test_images"][:2])
    exp = run_cli("explain", "--checkpoint", run, images, "--method", "gradcam", "--out", tmp_path / "cam")
    assert exp.code == 0, exp.err
    maps = sorted((tmp_path / "cam").rglob("*.npy"))
    assert len(maps) == 2 and all(np.isfinite(np.load(m)).all() and np.load(m).max() > 0 for m in maps)


def test_resume_keeps_finished_members_and_transfer_starts_from_the_first(ensemble_run, run_cli):
    run, _ = ensemble_run
    before = load_model(run)[0].state_dict()
    (run / "model.json").unlink()  # as if killed after the members, before the ensemble was written
    res = run_cli("train", "--resume", "--out", run)
    assert res.code == 0, res.err
    assert res.err.count("finished earlier") == 2
    after = load_model(run)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    first = load_model(member_dir(run, 0))[0].state_dict()
    weights = read_weights(run)
    assert weights.keys() == first.keys() and all(torch.equal(weights[k], first[k]) for k in first)


def test_an_ensemble_needs_a_network_and_one_member(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(20, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", fast_config, "--ensemble-size", "0", "--out", tmp_path / "r")
    assert res.code == 2 and "train.ensemble" in res.err
    res = run_cli(
        "train", "--data", data, "--model", "classical/hog-svm", "--ensemble-size", "2", "--out", tmp_path / "c"
    )
    assert res.code == 2 and "classical" in res.err


def test_members_of_different_architectures_make_one_checkpoint_every_command_takes(
    tmp_path, make_npz, fast_config, run_cli
):
    from medclass.serve.app import model_card

    data = make_npz(tmp_path / "d.npz", sizes=(40, 16, 16), size=16)
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(fast_config.read_text() + "\nmodel:\n  members: [smallcnn, hybrid_cnn_vit, vit_tiny]\n")
    run = tmp_path / "run"
    res = run_cli("train", "--data", data, "--config", cfg, "--out", run)  # ensemble: 1 -> one per entry
    assert res.code == 0, res.err
    assert "smallcnn + hybrid_cnn_vit + vit_tiny, a deep ensemble of 3" in res.err
    meta = json.loads((run / "model.json").read_text())
    names = [a["name"] for a in meta["deep_ensemble"]["architectures"]]
    assert names == ["smallcnn", "hybrid_cnn_vit", "vit_tiny"]
    model, _ = load_model(run)
    kinds = [type(load_model(member_dir(run, i))[0]).__name__ for i in range(3)]
    assert [type(m).__name__ for m in model.members] == kinds and len(set(kinds)) == 3
    assert model_card(Predictor.from_checkpoint(run), run)["ensemble"] == names
    assert run_cli("predict", "--checkpoint", run, data).code == 0
    ex = run_cli("export", "--checkpoint", run, "--out", tmp_path / "m.onnx")
    assert ex.code == 0, ex.err  # parity with PyTorch held
    images = tmp_path / "x.npy"
    np.save(images, np.load(data)["test_images"][:2])
    exp = run_cli("explain", "--checkpoint", run, images, "--method", "gradcam", "--out", tmp_path / "cam")
    assert exp.code == 0, exp.err  # convolutional maps and transformer tokens averaged together
    maps = sorted((tmp_path / "cam").rglob("*.npy"))
    assert len(maps) == 2 and all(np.isfinite(np.load(m)).all() and np.load(m).max() > 0 for m in maps)
    one = run_cli("train", "--data", data, "--config", cfg, "--model", "smallcnn", "--out", tmp_path / "one", "--quiet")
    assert one.code == 0 and not (tmp_path / "one" / "members").exists()  # --model names the one architecture


def test_an_unknown_member_architecture_fails_before_training(tmp_path, make_npz, fast_config, run_cli):
    data = make_npz(tmp_path / "d.npz", sizes=(20, 8, 8), size=12)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(fast_config.read_text() + "\nmodel:\n  members: [smallcnn, no_such_net]\n")
    res = run_cli("train", "--data", data, "--config", cfg, "--out", tmp_path / "r")
    assert res.code == 2 and "no_such_net" in res.err
    assert not (tmp_path / "r" / "members").exists()
