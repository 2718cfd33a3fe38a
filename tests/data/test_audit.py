"""Data audit: planted exact/near duplicates, patients across splits, census, exit codes and privacy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data.audit import AuditReport, audit
from medclass.data.audit_report import format_report, report_to_dict, run_audit
from medclass.errors import DataError

SECRET = "PAT-SECRET-123"


def smooth_image(seed: int, size: int = 48) -> np.ndarray:
    """A random smooth grey image ``(size, size)`` uint8, values about 30..210; different seeds look unrelated."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(40, 200, (6, 6)).astype(np.uint8))
    a = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC)).astype(np.int16)
    return np.clip(a + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)


def brighter(a: np.ndarray) -> np.ndarray:
    return np.clip(a.astype(np.int16) + 15, 0, 255).astype(np.uint8)


def save(path: Path, a: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **kwargs)
    return path


def scope(items: list, name: str):
    return next(x for x in items if x.scope == name)


# ---------------------------------------------------------------------------------- folder with splits


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """ROOT/{train,test}/{a,b}/ with planted duplicates (see the test for the list)."""
    root = tmp_path / "data"
    seed = iter(range(100))
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            for k in range(n):
                save(root / split / cls / f"{k}.png", smooth_image(next(seed)))
    # exact, byte-identical, inside train (same label)
    (root / "train/a/0_copy.png").write_bytes((root / "train/a/0.png").read_bytes())
    # exact across splits with another label: same pixels, re-encoded (different bytes)
    src = np.asarray(Image.open(root / "train/b/1.png"))
    save(root / "test/a/from_train_b.png", src, compress_level=1)
    # near across splits: a brightened copy
    save(root / "test/b/brighter.png", brighter(np.asarray(Image.open(root / "train/a/2.png"))))
    # near inside test: a resized copy
    small = Image.open(root / "test/a/0.png").resize((40, 40), Image.Resampling.BILINEAR)
    save(root / "test/a/smaller.png", np.asarray(small))
    return root


def test_folder_with_splits_finds_planted_duplicates(split_folder: Path):
    assert (split_folder / "test/a/from_train_b.png").read_bytes() != (split_folder / "train/b/1.png").read_bytes()
    r = audit(str(split_folder))
    assert isinstance(r, AuditReport)
    assert r.kind == "folder" and r.splits_given and r.images == 12 + 6 + 4
    assert [s.split for s in r.splits] == ["train", "test"]
    assert r.splits[0].classes == {"a": 7, "b": 6} and r.splits[1].classes == {"a": 5, "b": 4}
    train, test, across = scope(r.exact, "train"), scope(r.exact, "test"), scope(r.exact, "across")
    assert (train.groups, train.images, train.label_conflicts) == (1, 2, 0)
    assert sorted(train.examples[0]) == ["train/a/0.png", "train/a/0_copy.png"]
    assert test.groups == 0
    assert (across.groups, across.images, across.label_conflicts) == (1, 2, 1)
    assert r.byte_identical == {"groups": 1, "files": 2, "dropped_by_training": 1}
    near = {n.scope: n.pairs for n in r.near}
    assert near == {"train": 0, "test": 1, "train/test": 1, "across": 1}
    assert sorted(scope(r.near, "test").examples[0][:2]) == ["test/a/0.png", "test/a/smaller.png"]
    assert sorted(scope(r.near, "across").examples[0][:2]) == ["test/b/brighter.png", "train/a/2.png"]
    assert scope(r.near, "across").label_conflicts == 1
    assert r.patients is None and r.training is None and r.unreadable == []
    assert r.sizes == [["48x48", 21], ["40x40", 1]] and r.modes == {"grey": 22} and r.file_modes == {"L": 22}
    assert r.leakage_found and len(r.reasons) == 2
    text = format_report(r)
    assert "Leakage: FOUND" in text and "train/a/0_copy.png" in text
    json.dumps(report_to_dict(r))  # JSON-able


def test_near_duplicates_need_close_hashes_and_pixels(split_folder: Path):
    strict = audit(str(split_folder), near_distance=0, min_correlation=0.999)
    assert scope(strict.near, "across").pairs <= 1
    loose = audit(str(split_folder), min_correlation=0.0)
    assert loose.near_rejected == 0
    assert sum(n.pairs for n in loose.near if "/" not in n.scope) >= 2


# --------------------------------------------------------------------------------- manifest, patients


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Splits and patients: SECRET (also in its file names) has images in train and test, one of them
    twice (byte-identical); one file is not an image."""
    rows = []
    for k in range(8):
        split = "train" if k < 5 else "test"
        pid = SECRET if k in (0, 6) else f"P{k:03d}"
        name = f"img/{pid}_{k}.png"
        save(tmp_path / name, smooth_image(200 + k))
        rows.append({"path": name, "split": split, "label": "sick" if k % 2 else "well", "patient_id": pid})
    (tmp_path / f"img/{SECRET}_0_copy.png").write_bytes((tmp_path / f"img/{SECRET}_0.png").read_bytes())
    rows.append({"path": f"img/{SECRET}_0_copy.png", "split": "train", "label": "well", "patient_id": SECRET})
    (tmp_path / "img" / "P999_broken.png").write_bytes(b"not an image at all")
    rows.append({"path": "img/P999_broken.png", "split": "test", "label": "well", "patient_id": "P999"})
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "split", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_manifest_patients_across_splits_and_unreadable(manifest: Path):
    r = audit(str(manifest))
    assert r.kind == "manifest" and r.images == 10
    assert r.patients is not None
    assert (r.patients.patients, r.patients.shared, r.patients.images) == (8, 1, 3)
    assert r.patients.by_pair == {"train/test": 1}
    assert len(r.unreadable) == 1 and r.unreadable[0][0].endswith(">_broken.png")
    assert "P999" not in str(r.unreadable)  # nor in the error message, which names the file
    assert [s.images for s in r.splits] == [6, 3]  # the unreadable file is not counted
    train = scope(r.exact, "train")
    assert (train.groups, train.images, train.patient_conflicts) == (1, 2, 0)
    # the patient ID inside the file names is replaced by one salted tag
    (a, b) = sorted(train.examples[0])
    assert a.startswith("img/<patient ") and a.endswith(">_0.png") and b == a.replace("_0.png", "_0_copy.png")
    assert scope(r.exact, "across").groups == 0 and scope(r.near, "across").pairs == 0
    assert r.leakage_found and r.reasons == ["1 patient(s) have images in two or more splits"]


def test_run_audit_exit_codes_json_and_no_patient_ids(manifest: Path, tmp_path: Path, capsys):
    out = tmp_path / "out" / "audit.json"
    assert run_audit(str(manifest), strict=False, near_distance=4, json_out=str(out)) == 0
    printed = capsys.readouterr().out
    assert run_audit(str(manifest), strict=True, near_distance=4, json_out=None) == 1
    printed += capsys.readouterr().out
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["leakage_found"] is True and data["patients"]["shared"] == 1
    assert data["exact"][0]["examples"]  # file names are shown ...
    for text in (printed, out.read_text(encoding="utf-8")):
        assert "<patient " in text
        assert SECRET not in text and "P001" not in text and "P999" not in text  # ... but never a patient ID


# ------------------------------------------------------------------------------------- no splits


def test_folder_without_splits_label_conflict_and_training_split(tmp_path: Path):
    root = tmp_path / "flat"
    for cls, seeds in (("cat", range(0, 15)), ("dog", range(15, 30))):
        for s in seeds:
            save(root / cls / f"{s}.png", smooth_image(300 + s))
    (root / "cat/0_again.png").write_bytes((root / "cat/0.png").read_bytes())
    r = audit(str(root))
    assert not r.splits_given and [s.split for s in r.splits] == ["all"] and r.splits[0].images == 31
    assert not r.leakage_found  # a byte-identical copy with the same label is not leakage by the no-split rule
    t = r.training
    assert t is not None and t.duplicates_dropped == 1
    assert [s.split for s in t.splits] == ["train", "val", "test"] and sum(s.images for s in t.splits) == 30
    assert t.exact.groups == 0
    assert run_audit(str(root), strict=True, near_distance=4, json_out=None) == 0

    save(root / "dog/conflict.png", np.asarray(Image.open(root / "cat/3.png")), compress_level=1)
    r = audit(str(root))
    assert scope(r.exact, "all").groups == 2 and scope(r.exact, "all").label_conflicts == 1
    assert r.leakage_found and r.reasons == ["1 exact-duplicate group(s) carry conflicting labels"]
    assert r.training is not None and r.training.duplicates_dropped == 1  # training drops byte-identical files only
    assert "Training split" in format_report(r)


# ------------------------------------------------------------------------------------------- npz


def test_npz_duplicate_across_splits(tmp_path: Path):
    images = np.stack([smooth_image(500 + k, size=28) for k in range(30)])
    labels = (np.arange(30) % 2).astype(np.uint8)[:, None]
    arrays = {}
    for split, sl in (("train", slice(0, 20)), ("val", slice(20, 25)), ("test", slice(25, 30))):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[sl].copy(), labels[sl]
    arrays["test_images"][0] = arrays["train_images"][3]
    path = tmp_path / "tiny.npz"
    np.savez(path, **arrays)
    r = audit(str(path))
    assert r.kind == "npz" and r.images == 30 and r.byte_identical is None
    across = scope(r.exact, "across")
    assert across.groups == 1 and across.examples == [["train[3]", "test[0]"]]
    assert scope(r.near, "across").pairs == 0
    assert r.sizes == [["28x28", 30]] and r.file_modes == {"array": 30}
    assert r.leakage_found and r.training is None


def test_bad_source_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError):
        audit(str(tmp_path / "missing.csv"))


# ------------------------------------------------------------------------------------ real data


@pytest.mark.slow  # about 10-15 s on two shared cores
def test_mednist_duplicates(shared_data: Path):
    r = audit(str(shared_data / "mednist"))
    assert r.images == 11_791 and not r.splits_given and r.unreadable == []
    # PROVENANCE.md: 56 files in 17 byte-identical groups (AbdomenCT 32, HeadCT 24), never across classes
    assert r.byte_identical == {"groups": 17, "files": 56, "dropped_by_training": 39}
    assert scope(r.exact, "all").groups >= 17 and scope(r.exact, "all").label_conflicts == 0
    assert r.training is not None and r.training.duplicates_dropped == 39
    assert sum(n.pairs for n in r.near) > 0
    assert r.sizes == [["64x64", 11_791]]
