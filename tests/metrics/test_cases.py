"""One prediction per case (``--group-by``): mean logits per case against a naive loop, case labels, and a run whose
cases stay whole in one split and whose metrics hold the case-level figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medclass
from medclass.data.files import read_manifest
from medclass.errors import DataError
from medclass.metrics.cases import Cases


def test_mean_logits_match_a_naive_loop():
    rng = np.random.default_rng(0)
    ids = rng.choice(["a", "b", "c", "d"], size=23)
    logits = torch.from_numpy(rng.normal(size=(23, 3)).astype(np.float32))
    cases = Cases.of(ids)
    assert cases.ids.tolist() == list(dict.fromkeys(ids.tolist()))  # order of first appearance
    got = cases.mean_logits(logits)
    for k, case in enumerate(cases.ids):
        want = logits[torch.from_numpy(ids == case)].mean(0)
        assert torch.allclose(got[k], want, atol=1e-6)
    assert cases.sizes().tolist() == [int((ids == c).sum()) for c in cases.ids]


def test_case_labels_take_the_most_common_and_count_disagreements():
    cases = Cases.of(np.array(["x", "x", "x", "y", "y", "z"]))
    labels, mixed = cases.labels(np.array([1, 1, 2, 0, np.nan, np.nan], np.float32))
    assert labels[:2].tolist() == [1, 0] and np.isnan(labels[2]) and mixed == 1
    multi, mixed = cases.labels(np.array([[0, 1], [1, 1], [0, 0], [0, 0], [0, 0], [1, 0]], np.float32))
    assert multi.tolist() == [[1, 1], [0, 0], [1, 0]] and mixed == 1  # case x: label 0 differs, present in one image


def _lesion_manifest(root: Path, lesions: int = 60, seed: int = 0) -> Path:
    """2-4 images per lesion; the label (lesion parity) shows in every image of the lesion as brightness, weakly."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for lesion in range(lesions):
        label = lesion % 2
        for k in range(int(rng.integers(2, 5))):
            pixels = rng.normal(110 + 30 * label, 40, (8, 8)).clip(0, 255).astype(np.uint8)
            name = f"img/{lesion:03d}_{k}.png"
            Image.fromarray(pixels).save(root / name)
            rows.append([name, label, f"L{lesion:03d}", f"p{lesion // 3}"])
    path = root / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "lesion_id", "patient_id"])
        writer.writerows(rows)
    return path


def test_group_by_reads_cases_and_refuses_blank_ones(tmp_path):
    path = _lesion_manifest(tmp_path, lesions=4)
    table = read_manifest(path, group_by="lesion_id")
    assert table.cases is not None and set(table.cases) == {"L000", "L001", "L002", "L003"}
    assert table.patient_ids.tolist() == table.cases.tolist()  # the split's group column unless one is named
    assert read_manifest(path, group_by="lesion_id", group_column="patient_id").patient_ids[0] == "p0"
    text = path.read_text().splitlines()
    text[2] = ",".join(text[2].split(",")[:2] + ["", "p0"])
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"m.csv: row 3, column 'lesion_id': empty case identifier"):
        read_manifest(path, group_by="lesion_id")
    with pytest.raises(DataError, match="applies to CSV manifests only"):
        medclass.load_dataset("breastmnist", group_by="lesion_id")


def test_a_run_grouped_by_lesion_keeps_lesions_whole_and_reports_cases(tmp_path):
    data = _lesion_manifest(tmp_path / "data")
    options = {"epochs": 3, "batch_size": 16, "train.min_steps": 0, "train.threads": 1, "eval.n_bootstrap": 20}
    run = medclass.train(data, recipe="default", out=tmp_path / "run", progress=False, group_by="lesion_id", **options)
    ds = medclass.load_dataset(str(data), group_by="lesion_id")
    seen = [set(s.cases) for s in ds.splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), "a lesion straddles two splits"
    test = run.metrics["splits"]["test"]
    cases = test["cases"]
    assert cases["n_cases"] == len(seen[2]) and cases["n"] == len(seen[2]) < test["n"]
    assert cases["images_per_case"] == pytest.approx(test["n"] / len(seen[2]), abs=1e-3)
    assert cases["mixed_labels"] == 0 and 0.0 <= cases["auc"] <= 1.0
