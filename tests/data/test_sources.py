"""Data sources: MedMNIST-format .npz files (synthetic and real), folders of class subfolders, CSV manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medclass.data.catalog import CATALOG
from medclass.data.sources import infer_task, load_dataset, load_folder, load_manifest, load_npz
from medclass.errors import DataError

# --------------------------------------------------------------------------------------------- npz


def test_npz_grey_2d(tmp_path, make_npz):
    path = make_npz(tmp_path / "grey.npz", sizes=(20, 8, 6), size=12)
    raw = np.load(path)
    ds = load_npz(path)
    assert ds.name == "grey" and ds.task == "binary" and ds.label_names == ["0", "1"]
    assert ds.sample_shape == (1, 12, 12) and ds.spatial_dims == 2
    assert [len(s) for s in ds.splits.values()] == [20, 8, 6]
    train = ds.splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 1, 12, 12)
    assert np.array_equal(train.images[:, 0].numpy(), raw["train_images"])
    assert train.labels.dtype == np.float32 and train.labels.shape == (20,)  # (N, 1) -> (N,)
    assert np.array_equal(train.labels, raw["train_labels"][:, 0])
    assert ds.md5 is not None and len(ds.md5) == 32


def test_npz_rgb_channels_last_to_channels_first(tmp_path, make_npz):
    path = make_npz(tmp_path / "rgb.npz", task="multiclass", channels=3, num_classes=4, sizes=(16, 8, 8), size=10)
    raw = np.load(path)["val_images"]
    assert raw.shape == (8, 10, 10, 3)
    ds = load_npz(path)
    assert ds.task == "multiclass" and ds.num_classes == 4 and ds.channels == 3
    assert ds.splits["val"].images.shape == (8, 3, 10, 10)
    assert np.array_equal(ds.splits["val"].images.numpy(), raw.transpose(0, 3, 1, 2))


def test_npz_3d(tmp_path, make_npz):
    path = make_npz(tmp_path / "vol.npz", size=8, depth=6, sizes=(10, 4, 4))
    ds = load_npz(path)
    assert ds.spatial_dims == 3 and ds.sample_shape == (1, 6, 8, 8)
    assert np.array_equal(ds.splits["test"].images[:, 0].numpy(), np.load(path)["test_images"])


def test_npz_multilabel_keeps_nan(tmp_path, make_npz):
    path = make_npz(tmp_path / "ml.npz", task="multilabel", num_labels=4, nan_fraction=0.3, sizes=(30, 10, 10))
    ds = load_npz(path)
    assert ds.task == "multilabel" and ds.label_names == ["0", "1", "2", "3"]
    labels = ds.splits["train"].labels
    assert labels.shape == (30, 4) and np.isnan(labels).any()
    assert set(np.unique(labels[~np.isnan(labels)])) <= {0.0, 1.0}


def test_npz_resize_and_wide_dtype(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 4096, size=(6, 8, 8)).astype(np.uint16)
        arrays[f"{split}_labels"] = np.array([0, 1, 2, 0, 1, 2])[:, None]
    path = tmp_path / "wide.npz"
    np.savez(path, **arrays)
    ds = load_npz(path, image_size=16)
    assert ds.task == "multiclass" and ds.sample_shape == (1, 16, 16)
    assert ds.splits["train"].images.dtype == torch.uint8


def test_npz_labels_must_be_class_indices(tmp_path, make_npz):
    arrays = dict(np.load(make_npz(tmp_path / "ok.npz", sizes=(6, 4, 4), size=8)))
    arrays["train_labels"] = np.full((6, 1), 1.5, dtype=np.float32)
    np.savez(tmp_path / "frac.npz", **arrays)
    with pytest.raises(DataError, match="class indices"):
        load_npz(tmp_path / "frac.npz")


@pytest.mark.parametrize("name", ["pneumoniamnist", "breastmnist", "adrenalmnist3d"])
def test_real_medmnist_files(shared_data, name):
    path = shared_data / "medmnist" / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not staged")
    info = CATALOG[name]
    ds = load_npz(path)
    assert ds.name == name and ds.task == info.task and ds.label_names == list(info.label_names)
    assert ds.md5 == info.file(28).md5
    assert {k: len(v) for k, v in ds.splits.items()} == info.n_samples
    assert ds.spatial_dims == info.ndim and ds.channels == info.channels
    assert ds.sample_shape[1:] == (28,) * info.ndim
    for split in ds.splits.values():
        assert split.labels.ndim == 1 and set(np.unique(split.labels)) <= {0.0, 1.0}


def test_catalog_name_uses_offline_mirror(shared_data, monkeypatch):
    mirror = shared_data / "medmnist"
    if not (mirror / "breastmnist.npz").is_file():
        pytest.skip("breastmnist.npz not staged")
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(mirror))
    ds = load_dataset("BreastMNIST", image_size=16, download=False)
    assert ds.name == "breastmnist" and ds.sample_shape == (1, 16, 16)
    assert ds.source == str(mirror / "breastmnist.npz")


@pytest.mark.slow  # about 415 MB of voxels in memory
def test_real_medmnist_3d_64(shared_data):
    path = shared_data / "medmnist" / "adrenalmnist3d_64.npz"
    if not path.is_file():
        pytest.skip(f"{path} not staged")
    ds = load_npz(path)
    assert ds.name == "adrenalmnist3d" and ds.sample_shape == (1, 64, 64, 64)


def test_unknown_catalog_name_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'breastmnst'.*did you mean 'breastmnist'"):
        load_dataset("breastmnst")
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=f"breastmnist_64.npz not found in MEDCLASS_DATA_DIR={tmp_path}"):
        load_dataset("breastmnist@64", download=False)


def test_infer_task():
    assert infer_task(np.array([0, 1, 1, np.nan], dtype=np.float32)) == "binary"
    assert infer_task(np.array([0, 1, 2], dtype=np.float32)) == "multiclass"
    assert infer_task(np.array([[0, 1], [1, np.nan]], dtype=np.float32)) == "multilabel"


# ----------------------------------------------------------------------------------------- folders


def _png(path: Path, value: int, size: int = 8, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3) if rgb else (size, size), value, dtype=np.uint8)
    if rgb:
        arr[..., 0] = 255 - value  # channels differ, so the image stays colour
    Image.fromarray(arr).save(path)


def _class_folder(root: Path, counts: dict[str, int], *, rgb: bool = False) -> Path:
    value = 0
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"{i:03d}.png", value, rgb=rgb)
            value += 1
    return root


def test_folder_of_class_subfolders(tmp_path):
    root = _class_folder(tmp_path / "data", {"normal": 20, "abnormal": 10})
    ds = load_folder(root, val=0.1, test=0.2, seed=0)
    assert ds.name == "data" and ds.task == "binary" and ds.label_names == ["abnormal", "normal"]
    assert ds.sample_shape == (1, 8, 8)
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 21, "val": 3, "test": 6}  # stratified: 2+1 val, 4+2 test
    values = np.concatenate([s.images[:, 0, 0, 0].numpy() for s in ds.splits.values()])
    assert sorted(values.tolist()) == list(range(30))  # each image exactly once
    again = load_folder(root, val=0.1, test=0.2, seed=0)
    assert torch.equal(again.splits["test"].images, ds.splits["test"].images)
    other = load_folder(root, val=0.1, test=0.2, seed=1)
    assert not torch.equal(other.splits["test"].images, ds.splits["test"].images)


def test_folder_rgb_and_resize(tmp_path):
    root = _class_folder(tmp_path / "rgb", {"a": 5, "b": 5, "c": 5}, rgb=True)
    ds = load_folder(root, image_size=12, val=0.2, test=0.2)
    assert ds.task == "multiclass" and ds.sample_shape == (3, 12, 12)


def test_folder_with_split_subfolders(tmp_path):
    root = tmp_path / "split"
    for i in range(12):
        _png(root / "train" / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    for i in range(100, 106):
        _png(root / "test" / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    ds = load_folder(root, val=0.25, test=0.2, seed=0)
    assert ds.label_names == ["cat", "dog"]
    test_values = sorted(ds.splits["test"].images[:, 0, 0, 0].tolist())
    assert test_values == list(range(100, 106))  # the given test split, untouched
    train_val = ds.splits["train"].images[:, 0, 0, 0].tolist() + ds.splits["val"].images[:, 0, 0, 0].tolist()
    assert sorted(train_val) == list(range(12)) and len(ds.splits["val"]) == 4  # val carved out of train


def test_folder_errors(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path / "empty")
    _class_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match="only one class"):
        load_folder(tmp_path / "one")


# --------------------------------------------------------------------------------------- manifests


def _manifest(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _images(folder: Path, n: int) -> list[str]:
    """n PNGs in folder/img, pixel value = index; returns paths relative to folder."""
    names = []
    for i in range(n):
        _png(folder / "img" / f"{i:03d}.png", i)
        names.append(f"img/{i:03d}.png")
    return names


def test_manifest_patient_split_without_split_column(tmp_path):
    names = _images(tmp_path, 60)
    rows = [[name, "pneumonia" if i % 3 == 0 else "normal", f"p{i // 3}"] for i, name in enumerate(names)]
    path = _manifest(tmp_path / "labels.csv", ["path", "label", "patient_id"], rows)
    ds = load_manifest(path, val=0.2, test=0.2, seed=0)
    assert ds.task == "binary" and ds.label_names == ["normal", "pneumonia"]
    patients = {k: set(s.patient_ids.tolist()) for k, s in ds.splits.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sum(len(s) for s in ds.splits.values()) == 60 and all(len(s) for s in ds.splits.values())
    for split in ds.splits.values():  # rows keep their own image, label and patient
        idx = split.images[:, 0, 0, 0].numpy().astype(int)
        assert np.array_equal(split.patient_ids, np.array([f"p{i // 3}" for i in idx]))
        assert np.array_equal(split.labels, (idx % 3 == 0).astype(np.float32))  # 1 = pneumonia
    again = load_manifest(path, val=0.2, test=0.2, seed=0)
    assert all(set(again.splits[k].patient_ids.tolist()) == patients[k] for k in patients)
    other = load_manifest(path, val=0.2, test=0.2, seed=5)
    assert any(set(other.splits[k].patient_ids.tolist()) != patients[k] for k in patients)


def test_manifest_multilabel_empty_cells_are_nan(tmp_path):
    names = _images(tmp_path, 20)
    rows = [
        [name, i % 2, "" if i % 5 == 0 else (i // 2) % 2, "train" if i < 12 else "val" if i < 16 else "test"]
        for i, name in enumerate(names)
    ]
    path = _manifest(tmp_path / "ml.csv", ["path", "effusion", "nodule", "split"], rows)
    ds = load_manifest(path)
    assert ds.task == "multilabel" and ds.label_names == ["effusion", "nodule"]
    train = ds.splits["train"]
    assert train.labels.shape == (12, 2)
    idx = train.images[:, 0, 0, 0].numpy().astype(int)
    assert np.array_equal(np.isnan(train.labels[:, 1]), idx % 5 == 0)
    assert not np.isnan(train.labels[:, 0]).any()


def test_manifest_split_column_is_respected(tmp_path):
    names = _images(tmp_path, 18)
    split_of = ["train"] * 10 + ["val"] * 4 + ["test"] * 4
    rows = [[name, i % 3, split_of[i]] for i, name in enumerate(names)]
    path = _manifest(tmp_path / "s.csv", ["path", "label", "split"], rows)
    ds = load_manifest(path, val=0.5, test=0.5)  # fractions unused: the splits are given
    assert ds.task == "multiclass" and ds.label_names == ["0", "1", "2"]
    for name, lo, hi in (("train", 0, 10), ("val", 10, 14), ("test", 14, 18)):
        assert sorted(ds.splits[name].images[:, 0, 0, 0].tolist()) == list(range(lo, hi))


def test_manifest_bad_split_value(tmp_path):
    names = _images(tmp_path, 4)
    path = _manifest(
        tmp_path / "bad.csv",
        ["path", "label", "split"],
        [[n, i % 2, "training" if i == 0 else "train"] for i, n in enumerate(names)],
    )
    with pytest.raises(DataError, match=r"bad\.csv.*'training'"):
        load_manifest(path)


def test_manifest_errors(tmp_path):
    names = _images(tmp_path, 4)
    with pytest.raises(DataError, match="'path' column"):
        load_manifest(_manifest(tmp_path / "nopath.csv", ["file", "label"], [[n, 0] for n in names]))
    with pytest.raises(DataError, match="label column"):
        load_manifest(_manifest(tmp_path / "nolabel.csv", ["path"], [[n] for n in names]))
    with pytest.raises(DataError, match="0, 1 or empty"):
        load_manifest(_manifest(tmp_path / "ml.csv", ["path", "a", "b"], [[n, 2, 0] for n in names]))
    rows = [[n, i % 2] for i, n in enumerate(names)] + [["img/missing.png", 1]]
    with pytest.raises(DataError, match=r"gone\.csv.*missing\.png"):
        load_manifest(_manifest(tmp_path / "gone.csv", ["path", "label"], rows), val=0.25, test=0.25)


def test_load_dataset_dispatches(tmp_path, make_npz):
    npz = make_npz(tmp_path / "d.npz", sizes=(8, 4, 4), size=8)
    assert load_dataset(str(npz)).name == "d"
    root = _class_folder(tmp_path / "folder", {"a": 5, "b": 5})
    assert load_dataset(str(root), val=0.2, test=0.2).label_names == ["a", "b"]
    names = _images(tmp_path, 10)
    csv_path = _manifest(tmp_path / "m.csv", ["path", "label"], [[n, i % 2] for i, n in enumerate(names)])
    assert load_dataset(str(csv_path), val=0.2, test=0.2).name == "m"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported data file"):
        load_dataset(str(tmp_path / "notes.txt"))
