"""Training output: log records, not prints; a progress bar only on a terminal; logs without carriage returns."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medclass.config import RunConfig, build_config
from medclass.data.sources import load_dataset
from medclass.training.loop import fit
from medclass.utils.progress import on_terminal, show_progress

# Tiny synthetic splits leave some rates undefined; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::medclass.metrics.UndefinedMetricWarning")

EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+): train loss [\d.]+, val loss [\d.]+, val AUC [\d.na]+, val ACC [\d.na]+, lr \S+, [\d.]+ s$"
)


class _Terminal(io.StringIO):
    """A stderr stand-in that says it is an interactive terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_stream_handler_left_by_the_cli():
    """Set aside handlers an in-process CLI call left on the ``medclass`` logger (bound to a closed captured stream)."""
    logger = logging.getLogger("medclass")
    saved, level = list(logger.handlers), logger.level
    logger.handlers = [h for h in saved if not isinstance(h, logging.StreamHandler)]
    yield
    logger.handlers, logger.level = saved, level


def _tiny(tmp_path: Path, make_npz, epochs: int = 3) -> tuple[RunConfig, object]:
    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=12)
    train = {"epochs": epochs, "batch_size": 16, "threads": 1, "precision": "fp32", "device": "cpu"}
    cfg = build_config(recipe=None, overrides={"data": {"spec": str(data)}, "train": train})
    return cfg, load_dataset(str(data))


def _epoch_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "medclass.training.loop" and r.getMessage().startswith("epoch ")]


def test_on_terminal_and_show_progress(monkeypatch):
    assert on_terminal(_Terminal()) and not on_terminal(io.StringIO()) and not on_terminal(object())
    closed = io.StringIO()
    closed.close()
    assert not on_terminal(closed)  # isatty() on a closed stream raises ValueError
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert show_progress(True) and not show_progress(False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not show_progress(True)


def test_fit_off_a_terminal_logs_one_info_line_per_epoch_and_no_bar(tmp_path, make_npz, caplog, capsys):
    cfg, dataset = _tiny(tmp_path, make_npz)
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG, logger="medclass"):
        history = fit(cfg, dataset, tmp_path / "run", progress=True)  # a bar is allowed, but stderr is no terminal
    out, err = capsys.readouterr()
    assert len(history) == 3
    records = _epoch_records(caplog.records)
    assert [r.levelno for r in records] == [logging.INFO] * 3
    lines = [r.getMessage() for r in records]
    for i, line in enumerate(lines, 1):
        m = EPOCH_LINE.match(line)
        assert m and m.groups() == (str(i), "3"), line
    assert f"train loss {history[0]['train_loss']:.4f}" in lines[0]
    assert f"val loss {history[2]['val_loss']:.4f}" in lines[2]
    assert "\r" not in err and "\r" not in out
    assert "step" not in err and "it/s" not in err  # no tqdm bar was drawn
    assert out == ""  # the library prints nothing


def test_fit_on_a_terminal_draws_the_bar_and_keeps_the_epoch_lines_for_debug(tmp_path, make_npz, caplog, monkeypatch):
    cfg, dataset = _tiny(tmp_path, make_npz, epochs=2)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with caplog.at_level(logging.DEBUG, logger="medclass"):
        fit(cfg, dataset, tmp_path / "run", progress=True)
    assert "\r" in terminal.getvalue() and "step" in terminal.getvalue()  # tqdm redraws its line
    assert [r.levelno for r in _epoch_records(caplog.records)] == [logging.DEBUG] * 2
    terminal.truncate(0)
    terminal.seek(0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medclass"):
        fit(cfg, dataset, tmp_path / "quiet", progress=False)  # no bar asked for: the lines again, at INFO
    assert terminal.getvalue() == ""
    assert [r.levelno for r in _epoch_records(caplog.records)] == [logging.INFO] * 2


def test_init_weights_logs_instead_of_printing(tmp_path, make_npz, caplog, capsys):
    cfg, dataset = _tiny(tmp_path, make_npz, epochs=1)
    fit(cfg, dataset, tmp_path / "first", progress=False)
    second = RunConfig()
    second.model.init_from = str(tmp_path / "first")
    from medclass.models import create_model
    from medclass.training.loop import init_weights

    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="medclass"):
        init_weights(create_model("smallcnn", in_chans=1, num_classes=1), second)
    assert capsys.readouterr() == ("", "")
    (message,) = [r.getMessage() for r in caplog.records if r.name == "medclass.training.transfer"]
    assert message.startswith(f"initialised from {tmp_path / 'first'}") and "tensors loaded" in message


def test_cli_train_into_a_file_has_plain_lines_and_no_carriage_returns(tmp_path, make_npz):
    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=12)
    config = tmp_path / "c.yaml"  # no min_steps here: the default recipe's 1000 must not add epochs to --epochs 2
    config.write_text(
        "train:\n  batch_size: 16\n  threads: 1\n  precision: fp32\n  device: cpu\neval:\n  n_bootstrap: 20\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "medclass", "train", "--data", str(data), "--recipe", "default"]
    cmd += ["--config", str(config), "--epochs", "2", "--out", str(run)]
    with open(log, "wb") as err:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    raw = log.read_bytes()
    assert proc.returncode == 0, raw.decode(errors="replace")
    assert b"\r" not in raw
    assert len(raw) < 20_000, len(raw)
    epochs = [line for line in raw.decode().splitlines() if line.startswith("epoch ")]
    assert [EPOCH_LINE.match(line).groups() for line in epochs] == [("1", "2"), ("2", "2")], epochs
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 2  # header and the two epochs asked for
