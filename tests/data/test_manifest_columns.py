"""Manifest column options: which column holds the label and which groups rows into one split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.config import DataConfig
from medclass.data.files import read_manifest
from medclass.data.sources import load_configured, load_dataset, load_manifest
from medclass.errors import DataError


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pngs(folder: Path, n: int) -> list[str]:
    """n 4x4 grey PNGs whose pixel value is their index; paths relative to ``folder``."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(folder / "img" / f"{i:03d}.png")
        names.append(f"img/{i:03d}.png")
    return names


def test_label_column_picks_the_label(tmp_path):
    names = _pngs(tmp_path, 6)
    kinds = ["normal", "bacteria", "virus"]
    rows = [[n, "NORMAL" if i % 3 == 0 else "PNEUMONIA", kinds[i % 3]] for i, n in enumerate(names)]
    path = _write(tmp_path / "m.csv", ["path", "label", "subtype"], rows)
    assert read_manifest(path).label_names == ["NORMAL", "PNEUMONIA"]
    table = read_manifest(path, label_column="subtype")
    assert table.label_names == ["bacteria", "normal", "virus"] and table.task is None
    assert table.labels.tolist() == [1, 0, 2, 1, 0, 2]


def test_group_column_defaults_patient_then_group_id(tmp_path):
    names = _pngs(tmp_path, 4)
    rows = [[n, i % 2, f"p{i // 2}", f"g{i % 2}", f"s{i}"] for i, n in enumerate(names)]
    both = _write(tmp_path / "both.csv", ["path", "label", "patient_id", "group_id", "site"], rows)
    assert read_manifest(both).patient_ids.tolist() == ["p0", "p0", "p1", "p1"]
    assert read_manifest(both, group_column="site").patient_ids.tolist() == ["s0", "s1", "s2", "s3"]
    lesion = _write(tmp_path / "lesion.csv", ["path", "label", "group_id"], [[r[0], r[1], r[3]] for r in rows])
    table = read_manifest(lesion)
    assert table.patient_ids.tolist() == ["g0", "g1", "g0", "g1"]
    assert table.task is None and table.labels.ndim == 1  # group_id is not a label column
    none = _write(tmp_path / "none.csv", ["path", "label"], [r[:2] for r in rows])
    assert read_manifest(none).patient_ids is None


def test_group_id_keeps_groups_in_one_split(tmp_path):
    names = _pngs(tmp_path, 60)
    rows = [[n, ["a", "b", "c"][i % 3], f"lesion{i // 4}"] for i, n in enumerate(names)]
    path = _write(tmp_path / "lesions.csv", ["path", "label", "group_id"], rows)
    ds = load_manifest(path, val=0.2, test=0.2, seed=0)
    groups = {k: set(s.patient_ids.tolist()) for k, s in ds.splits.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


def test_unknown_columns_are_one_line_errors(tmp_path):
    names = _pngs(tmp_path, 4)
    path = _write(tmp_path / "m.csv", ["path", "label", "age"], [[n, i % 2, 40] for i, n in enumerate(names)])
    for option in ("label_column", "group_column"):
        with pytest.raises(DataError) as err:
            read_manifest(path, **{option: "nope"})
        message = str(err.value)
        assert "\n" not in message and "m.csv" in message and option in message and "'nope'" in message
        assert "path, label, age" in message
    with pytest.raises(DataError, match="label_column 'path'"):
        read_manifest(path, label_column="path")


def test_column_options_refused_for_sources_without_columns(tmp_path, make_npz):
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "folder" / cls / f"{i}.png")
    with pytest.raises(DataError, match="CSV manifests only"):
        load_dataset(str(tmp_path / "folder"), label_column="subtype")
    npz = make_npz(tmp_path / "d.npz", sizes=(8, 4, 4), size=8)
    with pytest.raises(DataError, match="CSV manifests only"):
        load_dataset(str(npz), group_column="group_id")
    assert load_dataset(str(npz), label_column=None).name == "d"


def test_data_config_passes_columns_through(tmp_path):
    assert "label_column" not in DataConfig().file_options()  # unset: nothing for other sources to refuse
    names = _pngs(tmp_path, 30)
    rows = [[n, "x", ["u", "v", "w"][i % 3], f"p{i // 2}", "train" if i < 20 else "test"] for i, n in enumerate(names)]
    path = _write(tmp_path / "m.csv", ["path", "label", "subtype", "case", "split"], rows)
    cfg = DataConfig(spec=str(path), label_column="subtype", group_column="case", val_fraction=0.2)
    assert cfg.file_options()["label_column"] == "subtype" and cfg.file_options()["group_column"] == "case"
    ds = load_configured(cfg)
    assert ds.label_names == ["u", "v", "w"] and ds.task == "multiclass"
    # val is carved out of train by the grouping column
    assert not set(ds.splits["train"].patient_ids.tolist()) & set(ds.splits["val"].patient_ids.tolist())
