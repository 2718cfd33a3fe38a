"""Data-parallel training with real processes: torchrun and gloo on loopback.

The sharding is checked as a pure function; then real 2-process jobs: one step on 2 ranks against one
process on the same global batch, rank 0 alone writing, and a killed rank that ends the job with a clear
error, after which the run resumes in one process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medclass.training.distributed import World, shard_order

REPO = Path(__file__).resolve().parents[2]
# One step, no randomness besides the order: augmentation and EMA off; a model with batch norm (synchronised
# across the CPU ranks, so its statistics and running buffers are the whole batch's); unweighted loss (a
# class-weighted mean divides by each rank's own weights); SGD (Adam's first step is the gradient's sign, which
# float noise flips where a gradient is near zero).
ONE_STEP = [
    "--model", "smallcnn", "--epochs", "1", "--batch-size", "16", "--seed", "3",
    "--set", "train.min_steps=0", "--set", "train.threads=1", "--set", "train.precision=fp32",
    "--set", "train.device=cpu", "--set", "train.ema=0", "--set", "augment.enabled=false",
    "--set", "eval.n_bootstrap=10", "--set", "optim.warmup_epochs=0", "--set", "optim.class_weight=null",
    "--set", "optim.name=sgd", "--set", "optim.lr=0.1",
]  # fmt: skip


def test_each_rank_takes_its_slice_of_every_global_batch():
    order = torch.randperm(43, generator=torch.Generator().manual_seed(0))
    shards = [shard_order(order, 8, World(r, 4)) for r in range(4)]
    assert {len(s) for s in shards} == {10}  # 5 full batches of 2 per rank; the last batch (3 rows) gives none
    for k in range(5):
        union = torch.cat([s[2 * k : 2 * k + 2] for s in shards])
        assert torch.equal(union, order[8 * k : 8 * k + 8]), "ranks together see global batch k, in order"
    two = [shard_order(order, 8, World(r, 2)) for r in range(2)]
    assert [len(s) for s in two] == [21, 21] and torch.equal(torch.cat([two[0][-1:], two[1][-1:]]), order[40:42])
    assert torch.equal(shard_order(order, 8, World()), order)
    assert torch.equal(shard_order(order, 8, World(1, 4)), shards[1]), "the same order gives the same shards"


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("WORLD_SIZE", None)
    return env


def _medclass(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medclass", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), check=False)


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory, make_npz):
    return make_npz(tmp_path_factory.mktemp("ddp") / "d.npz", sizes=(16, 16, 16), size=16)


def test_two_processes_take_the_step_of_one_and_only_rank_0_writes(one_batch, tmp_path):
    single = _medclass("train", "--data", one_batch, "--out", tmp_path / "one", *ONE_STEP)
    assert single.returncode == 0, single.stderr[-2000:]
    double = _medclass("train", "--data", one_batch, "--out", tmp_path / "two", "--nproc", "2", *ONE_STEP)
    assert double.returncode == 0, double.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "state.safetensors"))
    b = load_file(str(tmp_path / "two" / "state.safetensors"))
    params = [k for k in a if k.startswith("model.")]
    assert any(k.endswith("running_var") for k in params)
    assert params and all(torch.allclose(a[k], b[k], atol=1e-5) for k in params), "one step, same update"
    assert "world_size: 2" in (tmp_path / "two" / "config.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    log = double.stderr
    assert log.count("epoch 1/1:") == 1 and log.count("training took") == 1, log[-2000:]  # rank 0 alone logs
    assert double.stdout.count(" test: AUC ") == 1


def _descendants(pid: int) -> list[int]:
    """Process IDs under ``pid`` (children, grandchildren ...), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        frontier += kids
    return found


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


def test_a_killed_rank_ends_the_job_with_one_line_and_the_run_resumes_in_one_process(tmp_path, make_npz):
    data = make_npz(tmp_path / "d.npz", sizes=(160, 32, 32), size=16)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", out, "--nproc", "2", "--epochs", "6", "--batch-size", "16"]
    args += ["--set", "train.min_steps=0", "--set", "train.threads=1", "--set", "train.precision=fp32"]
    args += ["--set", "eval.n_bootstrap=10", "--set", "train.device=cpu"]
    job = subprocess.Popen(
        [sys.executable, "-m", "medclass", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / "history.csv").is_file():
            assert job.poll() is None and time.monotonic() < deadline, "the job never finished an epoch"
            time.sleep(0.1)
        victim = next(p for p in _descendants(job.pid) if _rank_of(p) == "1")
        os.kill(victim, signal.SIGKILL)
        _, err = job.communicate(timeout=120)  # never hangs: torchrun stops rank 0
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("medclass: error: distributed training failed") and "--resume" in last, last
    done = int((out / "history.csv").read_text().splitlines()[-1].split(",")[0])
    assert 1 <= done < 6
    resumed = _medclass("train", "--resume", "--out", out, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 7)), "resumed after the last completed epoch"
    assert "world_size: 1" in (out / "config.yaml").read_text()
