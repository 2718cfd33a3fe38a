"""Tests for the MedMNIST dataset catalog."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest

from medclass.data.catalog import CATALOG, TASKS, DatasetInfo, get_info, match_file, parse_spec
from medclass.data.download import md5sum
from medclass.errors import DataError

REPO = Path(__file__).resolve().parents[2]
NAMES_2D = [
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
]
NAMES_3D = ["organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d"]
REAL_FILES = ["pneumoniamnist.npz", "breastmnist.npz", "adrenalmnist3d.npz", "adrenalmnist3d_64.npz"]
KNOWN_MD5 = [
    ("pneumoniamnist", 28, "28209eda62fecd6e6a2d98b1501bb15f"),
    ("pneumoniamnist", 64, "8f4eceb4ccffa70c672198ea285246c6"),
    ("pneumoniamnist", 224, "d6a3c71de1b945ea11211b03746c1fe1"),
    ("breastmnist", 28, "750601b1f35ba3300ea97c75c52ff8f6"),
    ("adrenalmnist3d", 28, "bbd3c5a5576322bc4cdfea780653b1ce"),
    ("adrenalmnist3d", 64, "17721accfe9fb005146a47d33bc54b2f"),
]


@pytest.fixture(scope="module")
def medmnist_dir() -> Path:
    """The shared folder with real MedMNIST files; missing fails under CI and skips elsewhere."""
    root = Path(os.environ.get("MEDCLASS_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"
    missing = [name for name in REAL_FILES if not (root / name).is_file()]
    if missing:
        msg = f"real MedMNIST test files missing in {root}: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def test_catalog_names_and_order() -> None:
    assert list(CATALOG) == NAMES_2D + NAMES_3D
    assert len(CATALOG) == 18


@pytest.mark.parametrize("name", NAMES_2D + NAMES_3D)
def test_entry_is_consistent(name: str) -> None:
    info = CATALOG[name]
    assert info.name == name
    assert info.task in TASKS
    assert info.ndim == (3 if name in NAMES_3D else 2)
    assert info.channels in (1, 3)
    assert info.num_classes == len(info.label_names) >= 2
    assert len(set(info.label_names)) == info.num_classes
    assert set(info.n_samples) == {"train", "val", "test"}
    assert all(n > 0 for n in info.n_samples.values())
    assert info.license in ("CC BY 4.0", "CC BY-NC 4.0")
    assert info.source and "\n" not in info.source and len(info.source) < 120
    assert sorted(info.files) == ([28, 64] if info.ndim == 3 else [28, 64, 128, 224])
    for size, f in info.files.items():
        assert f.size == size
        assert re.fullmatch(r"[0-9a-f]{32}", f.md5)
        expected = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
        assert f.filename == expected
        assert f.url == f"https://zenodo.org/records/10519652/files/{expected}?download=1"
    assert info.file() is info.files[28]


def test_md5s_are_unique() -> None:
    md5s = [f.md5 for info in CATALOG.values() for f in info.files.values()]
    assert len(md5s) == len(set(md5s)) == 12 * 4 + 6 * 2


@pytest.mark.parametrize(("name", "size", "md5"), KNOWN_MD5)
def test_known_md5(name: str, size: int, md5: str) -> None:
    assert get_info(name).file(size).md5 == md5


def test_task_and_label_facts() -> None:
    assert get_info("chestmnist").task == "multilabel"
    assert get_info("chestmnist").num_classes == 14
    assert get_info("retinamnist").task == "ordinal"
    assert get_info("pneumoniamnist").label_names == ("normal", "pneumonia")
    assert get_info("breastmnist").label_names == ("malignant", "normal, benign")
    assert get_info("pathmnist").channels == 3
    assert get_info("dermamnist").license == "CC BY-NC 4.0"
    assert get_info("organmnist3d").label_names[0] == "liver"
    assert get_info("organamnist").label_names[0] == "bladder"
    assert get_info("pneumoniamnist").n_samples == {"train": 4708, "val": 524, "test": 624}


def test_info_is_frozen_and_hashable() -> None:
    info = get_info("breastmnist")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.task = "multiclass"  # type: ignore[misc]
    assert {info: 1}[info] == 1
    assert isinstance(info, DatasetInfo)


def test_file_unknown_size() -> None:
    with pytest.raises(DataError, match=r"adrenalmnist3d: no 128 px file; available sizes: 28, 64"):
        get_info("adrenalmnist3d").file(128)


def test_get_info_case_insensitive() -> None:
    assert get_info("PneumoniaMNIST") is CATALOG["pneumoniamnist"]
    assert get_info(" breastmnist ") is CATALOG["breastmnist"]


def test_get_info_unknown_suggests() -> None:
    with pytest.raises(DataError) as exc:
        get_info("pneumonimnist")
    msg = str(exc.value)
    assert msg.startswith("unknown dataset 'pneumonimnist'; known: pathmnist, ")
    assert "did you mean 'pneumoniamnist'?" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="unknown dataset 'zzz'") as exc:
        get_info("zzz")
    assert "did you mean" not in str(exc.value)


def test_parse_spec() -> None:
    assert parse_spec("breastmnist@64") == (CATALOG["breastmnist"], 64)
    assert parse_spec("pneumoniamnist") == (CATALOG["pneumoniamnist"], 28)
    assert parse_spec("OrganMNIST3D@64") == (CATALOG["organmnist3d"], 64)
    assert parse_spec("data/train.npz") is None
    assert parse_spec("nosuchmnist@64") is None
    assert parse_spec("") is None


@pytest.mark.parametrize("spec", ["breastmnist@512", "adrenalmnist3d@224", "breastmnist@big", "breastmnist@"])
def test_parse_spec_bad_size(spec: str) -> None:
    with pytest.raises(DataError, match="breastmnist|adrenalmnist3d"):
        parse_spec(spec)


def test_match_file_by_name() -> None:
    assert match_file("breastmnist_64.npz") == (CATALOG["breastmnist"], 64)
    assert match_file(Path("/some/dir/breastmnist.npz")) == (CATALOG["breastmnist"], 28)
    assert match_file("AdrenalMNIST3D_64.npz") == (CATALOG["adrenalmnist3d"], 64)
    assert match_file("organmnist3d.npz") == (CATALOG["organmnist3d"], 28)
    assert match_file("adrenalmnist3d_224.npz") is None
    assert match_file("mydata.npz") is None
    assert match_file("breastmnist.csv") is None


def test_match_file_md5_first() -> None:
    md5 = CATALOG["pneumoniamnist"].file(64).md5
    assert match_file("renamed.npz", md5) == (CATALOG["pneumoniamnist"], 64)
    assert match_file("breastmnist.npz", md5.upper()) == (CATALOG["pneumoniamnist"], 64)
    # An unknown checksum falls back to the name.
    assert match_file("breastmnist.npz", "0" * 32) == (CATALOG["breastmnist"], 28)
    assert match_file("renamed.npz", "0" * 32) is None


@pytest.mark.parametrize("filename", REAL_FILES)
def test_real_files_match_catalog(medmnist_dir: Path, filename: str) -> None:
    path = medmnist_dir / filename
    by_name = match_file(path)
    assert by_name is not None
    info, size = by_name
    digest = md5sum(path)
    assert digest == info.file(size).md5
    assert match_file("unnamed.npz", digest) == (info, size)

    with np.load(path) as data:
        for split, n in info.n_samples.items():
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            assert len(images) == len(labels) == n
            shape = (size,) * info.ndim + ((3,) if info.channels == 3 else ())
            assert images.shape[1:] == shape
            assert labels.min() >= 0
            assert labels.max() < info.num_classes
