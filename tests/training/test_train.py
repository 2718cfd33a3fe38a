"""End-to-end training through the CLI: every task type, determinism, and resuming a killed run."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from medclass.checkpoint import load_model
from medclass.data.sources import load_dataset
from medclass.inference import predict_probs

# Tiny synthetic splits leave some rates undefined (e.g. no predicted positives); that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::medclass.metrics.UndefinedMetricWarning")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two runs' model.safetensors hold identical tensors (the header's key order may vary)."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _finite_history(run: Path) -> None:
    for row in _history(run):
        assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"])), row


# ------------------------------------------------------------------------------------ task types


def test_train_multiclass_rgb_file_not_in_catalog(tmp_path, make_npz, train_cli, run_cli):
    """Any MedMNIST-format file trains: 3-channel (N, H, W, 3) images, 3 classes, name unknown to the catalog."""
    data = make_npz(tmp_path / "other.npz", task="multiclass", channels=3, num_classes=3)
    run = tmp_path / "run"
    train_cli(data, run)
    meta = _json(run / "model.json")
    assert meta["task"] == "multiclass" and meta["label_names"] == ["0", "1", "2"]
    assert meta["architecture"]["in_chans"] == 3 and meta["architecture"]["num_outputs"] == 3
    assert meta["preprocessing"]["input_shape"] == [3, 12, 12] and meta["preprocessing"]["colour"] == "rgb"
    metrics = _json(run / "metrics.json")
    assert metrics["dataset"] == "other" and metrics["task"] == "multiclass"
    assert metrics["splits"]["test"]["auc"] > 0.8
    _finite_history(run)
    res = run_cli("predict", "--checkpoint", run, data)
    assert res.code == 0, res.err
    header = res.out.splitlines()[0]
    assert header == "source,prob_0,prob_1,prob_2,label,set,refer"
    assert len(res.out.splitlines()) == 1 + 24


def test_train_multilabel_with_unknown_labels(tmp_path, make_npz, train_cli):
    """NaN labels are left out of the loss (finite) and of the metrics (computed on the known cells)."""
    data = make_npz(tmp_path / "findings.npz", task="multilabel", channels=3, num_labels=3, nan_fraction=0.2)
    labels = np.load(data)["train_labels"]
    assert np.isnan(labels).any() and labels.shape[1] == 3
    run = tmp_path / "run"
    train_cli(data, run)
    _finite_history(run)
    meta = _json(run / "model.json")
    assert meta["task"] == "multilabel" and meta["architecture"]["num_outputs"] == 3
    assert isinstance(meta["threshold"], list) and len(meta["threshold"]) == 3
    metrics = _json(run / "metrics.json")
    test = metrics["splits"]["test"]
    assert math.isfinite(test["auc"]) and math.isfinite(test["acc"])
    # the same AUC computed by hand: per label on the known cells only, then the mean
    model, meta = load_model(run)
    split = load_dataset(str(data)).splits["test"]
    probs = predict_probs(model, split.images, "multilabel", meta["preprocessing"])
    per_label = []
    for k in range(3):
        known = ~np.isnan(split.labels[:, k])
        per_label.append(roc_auc_score(split.labels[known, k], probs[known, k]))
    assert test["auc"] == pytest.approx(np.mean(per_label), abs=1e-9)
    assert [c["support"] for c in test["per_class"]] == np.nansum(split.labels, axis=0).astype(int).tolist()


def test_train_3d_volumes(tmp_path, make_npz, train_cli, run_cli):
    """(N, D, H, W) volumes train the 3D form of smallcnn."""
    data = make_npz(tmp_path / "volumes.npz", task="binary", size=8, depth=8, sizes=(32, 16, 16))
    run = tmp_path / "run"
    train_cli(data, run)
    meta = _json(run / "model.json")
    assert meta["architecture"]["spatial_dims"] == 3
    assert meta["preprocessing"]["input_shape"] == [1, 8, 8, 8]
    metrics = _json(run / "metrics.json")
    assert set(metrics["splits"]) == {"val", "test"} and math.isfinite(metrics["splits"]["test"]["auc"])
    _finite_history(run)
    model, _ = load_model(run)
    assert model.spatial_dims == 3
    res = run_cli("predict", "--checkpoint", run, data)
    assert res.code == 0, res.err
    assert len(res.out.splitlines()) == 1 + 16


def test_train_ordinal_via_catalog_name(tmp_path, make_npz, train_cli):
    """A file named like a catalog file takes the catalog's task: retinamnist is ordinal, 5 grades, RGB."""
    data = make_npz(tmp_path / "retinamnist.npz", task="multiclass", channels=3, num_classes=5, sizes=(50, 20, 20))
    run = tmp_path / "run"
    train_cli(data, run)
    meta = _json(run / "model.json")
    assert meta["task"] == "ordinal" and len(meta["label_names"]) == 5
    assert meta["architecture"]["num_outputs"] == 5
    metrics = _json(run / "metrics.json")
    assert metrics["dataset"] == "retinamnist" and metrics["task"] == "ordinal"
    assert "quadratic_kappa" in metrics["splits"]["test"]
    _finite_history(run)


# ----------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_metrics(tmp_path, make_npz, train_cli):
    data = make_npz(tmp_path / "det.npz")
    train_cli(data, tmp_path / "a", "--seed", "3")
    train_cli(data, tmp_path / "b", "--seed", "3")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert _same_weights(tmp_path / "a", tmp_path / "b")
    train_cli(data, tmp_path / "c", "--seed", "4")
    assert not _same_weights(tmp_path / "a", tmp_path / "c")


# -------------------------------------------------------------------------------------- resuming


def _saved_epoch(run: Path) -> int:
    """Last completed epoch recorded in ``state.json`` (0 when none yet)."""
    try:
        return int(json.loads((run / "state.json").read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, make_npz, fast_config, run_cli, train_cli):
    epochs = 5
    data = make_npz(tmp_path / "resume.npz", sizes=(64, 16, 16))
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medclass", "train", "--quiet", "--epochs", str(epochs)]
    cmd += ["--data", str(data), "--config", str(fast_config), "--out", str(killed)]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and _saved_epoch(killed) < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert proc.poll() is None, f"training ended before it could be killed: {log.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _saved_epoch(killed)
    assert 1 <= killed_at < epochs, killed_at
    assert not (killed / "metrics.json").exists()

    res = run_cli("train", "--resume", "--out", killed)
    assert res.code == 0, res.err
    assert f"resuming {killed} after epoch {killed_at}" in res.err

    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]
    assert [int(r["epoch"]) for r in _history(killed)] == list(range(1, epochs + 1))
    metrics = _json(killed / "metrics.json")
    assert set(metrics["splits"]) == {"val", "test"}
    model, meta = load_model(killed)
    assert meta["task"] == "binary"

    reference = tmp_path / "reference"
    train_cli(data, reference, "--epochs", str(epochs))
    assert (killed / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    assert _same_weights(killed, reference)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _history(killed)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _history(reference)]


def test_time_budget_shortens_the_schedule_and_ends_the_epoch_that_spends_it(tmp_path, make_npz, run_cli, fast_config):
    cfg = tmp_path / "budget.yaml"
    cfg.write_text(fast_config.read_text().replace("  epochs: 2\n", "  epochs: 4\n  max_minutes: 0.00001\n"))
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", cfg, "--out", tmp_path / "r", "--quiet")
    assert res.code == 0, res.err
    assert "time budget of 1e-05 min: 1 of 4 epochs fit; the schedule is shortened to 1" in res.err
    assert len((tmp_path / "r" / "history.csv").read_text().splitlines()) == 2  # header and one epoch
    assert _json(tmp_path / "r" / "metrics.json")["splits"]["test"]["auc"] >= 0


def test_fit_budget_counts_the_epochs_the_latest_one_allows():
    from medclass.training.loop import _fit_budget

    def rows(*seconds: float) -> list[dict]:
        return [{"seconds": s} for s in seconds]

    logs: list[str] = []
    assert _fit_budget(10, rows(30.0), 2.0, logs.append) == 4  # 120 s / 30 s
    assert _fit_budget(10, rows(300.0), 2.0, logs.append) == 1  # one epoch at least
    assert _fit_budget(3, rows(1.0), 2.0, logs.append) == 3 and len(logs) == 2  # never more than planned
    assert _fit_budget(10, rows(30.0, 15.0), 2.0, logs.append) == 7  # 2 done, 75 s left / 15 s: the estimate grows
    assert _fit_budget(10, rows(30.0, 60.0), 2.0, logs.append) == 2  # never fewer than done
    assert logs[-1] == "time budget of 2 min: 2 of 10 epochs fit; the schedule is shortened to 2"


def test_continued_schedule_follows_the_new_plan_from_the_current_step():
    from medclass.config import OptimConfig
    from medclass.training.loop import _continue_schedule
    from medclass.training.optim import build_scheduler, lr_factor

    cfg = OptimConfig(lr=0.1, schedule="cosine", warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    long = build_scheduler(opt, cfg, steps_per_epoch=5, epochs=10)
    for _ in range(7):
        opt.step()
        long.step()
    short = build_scheduler(opt, cfg, steps_per_epoch=5, epochs=3)
    _continue_schedule(short, long.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(7, 15, 5, cfg))
    for step in range(8, 15):
        opt.step()
        short.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(step, 15, 5, cfg))
    assert opt.param_groups[0]["lr"] < 0.1 * lr_factor(14, 50, 5, cfg)  # decays faster than the 10-epoch plan


def test_device_auto_is_the_cpu_without_a_gpu_and_a_missing_gpu_is_a_clear_error(
    tmp_path, make_npz, run_cli, fast_config, monkeypatch
):
    from medclass.errors import ConfigError
    from medclass.training.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", fast_config, "--out", tmp_path / "r", "--device", "cuda:0")
    assert res.code == 2 and "train.device: 'cuda:0' asked for, but PyTorch sees no CUDA GPU" in res.err


def test_auto_precision_keeps_3d_models_in_fp32_on_the_cpu():
    """bf16 3D convolutions diverged on AdrenalMNIST3D; ``auto`` uses bf16 only for 2D, an explicit bf16 is obeyed."""
    from medclass.training.loop import autocast_dtype

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert autocast_dtype("auto", "cpu", spatial_dims=3) is None
    assert autocast_dtype("auto", "cpu", spatial_dims=2) == (torch.bfloat16 if native else None)
    assert autocast_dtype("bf16", "cpu", spatial_dims=3) == torch.bfloat16
    assert autocast_dtype("fp32", "cpu", spatial_dims=2) is None


def test_a_diverging_run_stops_with_a_one_line_error(tmp_path, make_npz, run_cli, fast_config):
    """A NaN loss ends training at once with advice, instead of a metric error after a wasted epoch."""
    data = make_npz(tmp_path / "a.npz", sizes=(48, 16, 16), size=12)
    res = run_cli(
        "train",
        "--data",
        data,
        "--config",
        fast_config,
        "--out",
        tmp_path / "r",
        "--lr",
        "1e30",
        "--set",
        "optim.grad_clip=0",
    )
    assert res.code == 2, res.err
    assert "training loss became nan" in res.err and "train.precision=fp32" in res.err and "Traceback" not in res.err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_matches_the_task_and_saves_cpu_weights(tmp_path, make_npz, run_cli, fast_config):
    """On a GPU: train with augmentation, class weights and bf16 autocast; the checkpoint loads on the CPU."""
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(
        fast_config.read_text().replace("device: cpu", "device: cuda").replace("precision: fp32", "precision: auto")
    )
    data = make_npz(tmp_path / "a.npz", sizes=(64, 16, 16), size=16)
    res = run_cli("train", "--data", data, "--config", cfg, "--out", tmp_path / "r", "--quiet")
    assert res.code == 0, res.err
    assert all(t.device.type == "cpu" for t in load_file(tmp_path / "r" / "model.safetensors").values())
    _finite_history(tmp_path / "r")
    assert 0 <= _json(tmp_path / "r" / "metrics.json")["splits"]["test"]["auc"] <= 1
