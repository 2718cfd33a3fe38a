"""Atomic writes: all or nothing, and files as readable as the umask allows (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from medclass.utils.files import atomic_open, atomic_path, remove_stale_temps, write_bytes, write_json, write_text


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """``umask(value)`` sets the process umask for the test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_follow_the_umask(tmp_path, umask):
    from medclass import checkpoint
    from medclass.report.html import write_report

    umask(0o022)
    write_text(tmp_path / "a.csv", "x,y\n1,2\n")
    write_json(tmp_path / "metrics.json", {"auc": 0.9})
    write_bytes(tmp_path / "b.bin", b"\0\1")
    with atomic_open(tmp_path / "c.part.npz", "wb", suffix=".part") as fh:
        fh.write(b"stream")
    checkpoint.save_model(tmp_path / "run", torch.nn.Linear(2, 1), {"architecture": {}})  # safetensors + model.json
    write_report(tmp_path / "report.html", title="t", metrics={"splits": {}})
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.name for p in written] == [
        "a.csv", "b.bin", "c.part.npz", "metrics.json", "report.html", "model.json", "model.safetensors"
    ]  # fmt: skip
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: "0o644" for p in written}

    umask(0o077)  # a private umask stays private; an existing file gets the current umask's mode
    write_json(tmp_path / "metrics.json", {"auc": 0.8})
    checkpoint.save_model(tmp_path / "run", torch.nn.Linear(2, 1), {"architecture": {}})
    assert _mode(tmp_path / "metrics.json") == 0o600 and _mode(tmp_path / "run" / "model.safetensors") == 0o600
    umask(0o002)
    write_text(tmp_path / "shared.txt", "group-writable")
    assert _mode(tmp_path / "shared.txt") == 0o664


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "m.json", "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("killed")
    with pytest.raises(ValueError), atomic_path(tmp_path / "new.csv") as tmp:
        tmp.write_text("partial")
        raise ValueError("bad row")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_text_is_utf8_with_unix_newlines_and_stale_temps_are_removed(tmp_path):
    path = write_text(tmp_path / "t.txt", "ä\nb\n")
    assert path.read_bytes() == "ä\nb\n".encode()
    with atomic_open(tmp_path / "u.txt", "w") as fh:
        fh.write("x\ny")
    assert (tmp_path / "u.txt").read_bytes() == b"x\ny"
    stale = tmp_path / ".model.json.deadbeef.tmp"
    stale.write_text("left by a killed run")
    assert remove_stale_temps(tmp_path) == [stale] and not stale.exists()
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "v", "a"):
        pass
