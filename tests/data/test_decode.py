"""Decoding file lists: the on-disk cache keyed by content, and exact-duplicate removal before splitting."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data import decode
from medclass.data.decode import DecodeOptions, decode_stack, duplicate_rows, file_digests
from medclass.data.files import read_manifest
from medclass.data.sources import load_folder, load_manifest
from medclass.errors import DataError


def _png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def test_duplicate_rows_keeps_lowest_rank_then_first():
    digests = ["a", "b", "a", "c", "b", "a"]
    assert duplicate_rows(digests).tolist() == [2, 4, 5]
    # rank 0 = train: the copy in train (row 5) is kept, the others dropped
    assert duplicate_rows(digests, priority=[2, 0, 1, 0, 0, 0]).tolist() == [0, 2, 4]


def test_cache_is_used_and_keyed_by_content(tmp_path, monkeypatch):
    paths = [_png(tmp_path / f"{i}.png", 10 * i) for i in range(5)]
    calls = []
    real = decode._read_one

    def counting(options):
        read = real(options)
        return lambda p: calls.append(p) or read(p)

    monkeypatch.setattr(decode, "_read_one", counting)
    first = decode_stack(paths, DecodeOptions(), where="t")
    assert first.shape == (5, 1, 8, 8) and first[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40]
    assert len(calls) == 5
    again = decode_stack(paths, DecodeOptions(), where="t")
    assert len(calls) == 5 and np.array_equal(again.numpy(), first.numpy())  # from the cache
    _png(paths[2], 99)  # same name, new content -> new key, decoded again
    changed = decode_stack(paths, DecodeOptions(), where="t")
    assert len(calls) == 10 and changed[2, 0, 0, 0] == 99
    resized = decode_stack(paths, DecodeOptions(image_size=4), where="t")  # options are in the key
    assert resized.shape == (5, 1, 4, 4) and len(calls) == 15
    decode_stack(paths, DecodeOptions(), where="t", cache=False)
    assert len(calls) == 20


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", i) for i in range(3)]
    decode_stack(paths, DecodeOptions(), where="t")
    (entry,) = list((Path(decode.cache_dir()) / "decoded").glob("*.npy"))
    entry.write_bytes(b"garbage")
    assert decode_stack(paths, DecodeOptions(), where="t")[:, 0, 0, 0].tolist() == [0, 1, 2]


def test_unreadable_file_names_the_dataset_and_file(tmp_path):
    good = _png(tmp_path / "a.png", 1)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"mydata: .*b\.png"):
        decode_stack([good, bad], DecodeOptions(), where="mydata")
    with pytest.raises(DataError, match=r"mydata: cannot read .*missing\.png"):
        file_digests([tmp_path / "missing.png"], where="mydata")


def test_folder_drops_byte_identical_files_before_splitting(tmp_path):
    for i in range(20):
        _png(tmp_path / "d" / ("a" if i % 2 else "b") / f"{i}.png", i)
    for i in range(0, 20, 4):  # five copies of existing images under new names (and a conflicting class)
        (tmp_path / "d" / "a" / f"copy{i}.png").write_bytes((tmp_path / "d" / "b" / f"{i}.png").read_bytes())
    ds = load_folder(tmp_path / "d", val=0.2, test=0.2, seed=0)
    values = np.concatenate([s.images[:, 0, 0, 0].numpy() for s in ds.splits.values()])
    assert sorted(values.tolist()) == list(range(20))  # every image once
    assert ds.extra["duplicates_dropped"] == 5 and "5 duplicate files dropped" in ds.describe()
    kept = load_folder(tmp_path / "d", val=0.2, test=0.2, seed=0, dedup=False)
    assert sum(len(s) for s in kept.splits.values()) == 25


def test_manifest_with_given_splits_keeps_the_train_copy(tmp_path):
    names = []
    for i in range(12):
        _png(tmp_path / "img" / f"{i}.png", i)
        names.append(f"img/{i}.png")
    (tmp_path / "img" / "dup.png").write_bytes((tmp_path / "img" / "0.png").read_bytes())
    rows = [[n, i % 2, "train" if i < 8 else "val" if i < 10 else "test"] for i, n in enumerate(names)]
    rows.insert(0, ["img/dup.png", 0, "test"])  # the copy in test comes first but train's copy wins
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "split"], *rows])
    ds = load_manifest(tmp_path / "m.csv")
    assert 0 in ds.splits["train"].images[:, 0, 0, 0].tolist()
    assert 0 not in ds.splits["test"].images[:, 0, 0, 0].tolist() and len(ds.splits["test"]) == 2


def test_manifest_label_column_and_metadata_columns(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", i)
    rows = [
        ["path", "readable", "error", "modality", "patient_id", "rows", "label", "subtype"],
        *[[f"{i}.png", "true", "", "CR", f"h{i // 2}", 8, "sick" if i % 2 else "well", "x"] for i in range(6)],
        ["broken.dcm", "false", "truncated", "", "", "", "sick", ""],
    ]
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    table = read_manifest(tmp_path / "index.csv")
    assert len(table.paths) == 6  # the unreadable row is left out
    assert table.label_names == ["sick", "well"] and table.task is None
    assert table.patient_ids.tolist() == ["h0", "h0", "h1", "h1", "h2", "h2"]
