"""Pretraining runs: every method on 2D and 3D data, resume, the encoder's use, probes and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medclass
from medclass import checkpoint
from medclass.config import RunConfig
from medclass.data.sources import load_dataset
from medclass.errors import ConfigError
from medclass.ssl.pretrain import pretrain

pytestmark = pytest.mark.filterwarnings("ignore::medclass.metrics.UndefinedMetricWarning")

FAST = {"batch_size": 16, "epochs": 2, "lr": 1e-3, "warmup_epochs": 0.5}


def _cfg(spec: str, method: str, **pretrain_options) -> RunConfig:
    cfg = RunConfig()
    cfg.data.spec = spec
    cfg.model.name = "smallcnn"
    cfg.train.precision = "fp32"
    cfg.train.threads = 1
    for key, value in {**FAST, "method": method, **pretrain_options}.items():
        setattr(cfg.pretrain, key, value)
    return cfg


@pytest.mark.parametrize(
    ("method", "depth"),
    [("simclr", None), ("byol", None), ("mim", None), ("rotation", None), ("slice_order", 6), ("mim", 6)],
)
def test_each_method_trains_an_encoder_that_init_from_loads(tmp_path, make_npz, method, depth):
    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=12, depth=depth)
    dataset = load_dataset(str(data))
    history = pretrain(_cfg(str(data), method), dataset, dataset.splits["train"].images[:0], tmp_path / "run")
    assert [r["epoch"] for r in history] == [1, 2] and all(np.isfinite(r["loss"]) for r in history)
    meta = checkpoint.read_model_meta(tmp_path / "run")
    assert meta["task"] == "embedding" and meta["architecture"]["num_outputs"] == 0
    assert meta["pretrain"]["method"] == method and meta["pretrain"]["images"] == 40

    from medclass.models import build_model
    from medclass.training.transfer import head_parameter_names, load_matching, read_weights

    model = build_model({**meta["architecture"], "num_outputs": 2})
    report = load_matching(model, read_weights(tmp_path / "run"), where="run")
    assert set(report["skipped"]) == set(head_parameter_names(model))  # every tensor but the new head
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not any(k.startswith(("projector", "target", "decoder", "head")) for k in weights)


def test_a_method_that_does_not_suit_the_data_is_a_clear_error(tmp_path, make_npz):
    data = make_npz(tmp_path / "v.npz", sizes=(20, 6, 6), size=12, depth=6)
    dataset = load_dataset(str(data))
    with pytest.raises(ConfigError, match="rotation is for 2D images"):
        pretrain(_cfg(str(data), "rotation"), dataset, dataset.splits["train"].images[:0], tmp_path / "r")


def test_a_killed_pretraining_run_resumes_to_the_same_weights(tmp_path, make_npz, monkeypatch):
    data = make_npz(tmp_path / "d.npz", sizes=(48, 12, 12), size=12)
    dataset = load_dataset(str(data))
    empty = dataset.splits["train"].images[:0]
    cfg = _cfg(str(data), "byol", epochs=3)  # BYOL: target network and momentum must resume too
    pretrain(cfg, dataset, empty, tmp_path / "whole")

    real_save = checkpoint.save_state
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed while saving epoch 2: epoch 1's state is what remains
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, dataset, empty, tmp_path / "killed")
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    history = pretrain(cfg, dataset, empty, tmp_path / "killed", resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    a, b = (load_file(str(tmp_path / d / "state.safetensors")) for d in ("whole", "killed"))
    for key in a:
        if key.startswith("method."):
            assert torch.equal(a[key], b[key]), key


def test_pretrain_api_pools_unlabeled_data_without_the_tasks_test_images(tmp_path, make_npz):
    """The test-image exclusion: copies of the task's test images in a pooled source never reach pretraining."""
    task = make_npz(tmp_path / "task.npz", sizes=(30, 10, 10), size=12, seed=0)
    # a pool holding the task's 10 test images, upscaled to 24 px and darkened (near copies, not exact ones),
    # and 20 other images: random smooth textures
    with np.load(task) as t:
        tests = torch.from_numpy(t["test_images"][:, None]).float()
    big = torch.nn.functional.interpolate(tests, size=24, mode="bilinear")
    coarse = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 255
    other = torch.nn.functional.interpolate(coarse, size=24, mode="bicubic")
    pool = torch.cat([big * 0.8, other])[:, 0].round().clamp(0, 255).numpy().astype(np.uint8)
    np.save(tmp_path / "pool.npy", pool)
    run = medclass.pretrain(
        task,
        "simclr",
        out=tmp_path / "run",
        unlabeled=[str(tmp_path / "pool.npy")],
        recipe="default",
        progress=False,
        pretrain=FAST,
        train={"precision": "fp32"},
    )
    meta = json.loads((run.path / "model.json").read_text())
    assert meta["pretrain"]["unlabeled"] == {str(tmp_path / "pool.npy"): 20}  # the 10 copies dropped
    assert meta["pretrain"]["images"] == 30 + 20
    probe = run.metrics["probe"]
    assert set(probe) == {"linear", "knn"} and 0 <= probe["linear"]["test"]["auc"] <= 1
    assert probe["knn"]["test"]["n"] == 10


def test_an_unlabeled_source_of_another_shape_is_a_one_line_error(tmp_path, make_npz, run_cli):
    task = make_npz(tmp_path / "task.npz", sizes=(20, 6, 6), size=12)
    rgb = make_npz(tmp_path / "rgb.npz", sizes=(10, 4, 4), size=12, channels=3)
    vol = make_npz(tmp_path / "vol.npz", sizes=(10, 4, 4), size=12, depth=6)
    for source, message in ((rgb, "images have 3 channel(s), the task's have 1"), (vol, "holds 3D volumes")):
        res = run_cli("pretrain", "--data", task, "--unlabeled", source, "--epochs", "1", "--out", tmp_path / "r", "-q")
        assert res.code == 2 and message in res.err and str(source) in res.err, res.err
        assert len(res.err.strip().splitlines()) == 1


def test_cli_pretrain_then_fine_tune_and_probe(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=12)
    res = run_cli(
        "pretrain",
        "--data",
        data,
        "--method",
        "rotation",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--set",
        "train.precision=fp32",
        "--out",
        tmp_path / "enc",
        "-q",
    )
    assert res.code == 0, res.err
    assert "linear" in res.out and "knn" in res.out
    res = run_cli(
        "train",
        "--data",
        data,
        "--config",
        fast_config,
        "--init-from",
        tmp_path / "enc",
        "--out",
        tmp_path / "ft",
        "-v",
    )
    assert res.code == 0, res.err
    assert "initialised from" in res.err
    res = run_cli("evaluate", "--checkpoint", tmp_path / "enc", "--data", data, "--probe", "knn", "--labels", "10")
    assert res.code == 0, res.err
    saved = json.loads((tmp_path / "enc" / "probe-d" / "probe.json").read_text())
    assert saved["labels"] == 10 and set(saved["probe"]) == {"knn"}
