"""Manifest columns that give the label away: planted leaks fire, honest columns stay silent, scores by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data.audit import audit
from medclass.data.audit_report import format_report, report_to_dict
from medclass.data.column_leaks import check_column, column_leaks, tree_thresholds

NAMES = ["a", "b", "c", "d"]


def _data(n: int = 800, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n).astype(np.float32)
    train = rng.random(n) < 0.7
    return y, train, rng


def _cells(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def test_a_copy_of_the_label_leaks_and_honest_columns_stay_silent():
    y, train, rng = _data()
    noisy = np.where(rng.random(len(y)) < 0.02, rng.integers(0, 4, len(y)), y)  # 2% noise: still a leak
    columns = {
        "code": _cells([NAMES[int(v)] + "x" for v in noisy]),
        "site": _cells(rng.choice(["arm", "leg", "back"], len(y))),
        "age": _cells(np.round(rng.normal(50, 10, len(y)) + 3 * y, 1)),  # a real but weak association
        "risk": _cells(np.round(10 * y + rng.normal(0, 0.5, len(y)), 3)),  # numeric, many values: a tree
    }
    found = {c.column: c for c in column_leaks(columns, y, train, NAMES)}
    assert found["code"].leaks and found["code"].metric == "balanced_accuracy" and found["code"].score > 0.95
    assert found["risk"].leaks and found["risk"].kind == "numeric-tree"
    for honest in ("site", "age"):
        assert not found[honest].flagged, (honest, found[honest])
    assert found["age"].kind == "numeric-tree" and found["site"].kind == "categorical"
    assert found["code"].verdict() == "leaks the label" and found["site"].verdict() == "-"


def test_the_score_is_a_per_value_majority_vote_fitted_on_train():
    y, train, rng = _data(n=400)
    cells = _cells(np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 4, len(y))))
    cells[~train & (rng.random(len(y)) < 0.05)] = "never-seen"
    result = check_column("c", cells, y, train, NAMES)
    # by hand: each value's training majority; an unseen value predicts the training majority class
    votes = {}
    for v in set(cells[train]):
        votes[v] = np.bincount(y[train][cells[train] == v].astype(int), minlength=4).argmax()
    overall = np.bincount(y[train].astype(int), minlength=4).argmax()
    pred = np.array([votes.get(v, overall) for v in cells[~train]])
    truth = y[~train].astype(int)
    recalls = [np.mean(pred[truth == c] == c) for c in range(4)]
    assert result.score == pytest.approx(np.mean(recalls))
    assert result.train_rows == train.sum() and result.heldout_rows == (~train).sum()


def test_binary_labels_are_scored_by_auc_of_the_training_positive_share():
    y, train, rng = _data(k=2)
    cells = _cells(np.where(y == 1, rng.choice(["p", "q"], len(y), p=[0.9, 0.1]), rng.choice(["p", "q"], len(y))))
    result = check_column("c", cells, y, train, ["neg", "pos"])
    share = {v: y[train][cells[train] == v].mean() for v in ("p", "q")}
    score = np.array([share[v] for v in cells[~train]])
    pos, neg = score[y[~train] == 1], score[y[~train] == 0]
    naive = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert result.metric == "auc" and result.score == pytest.approx(naive) and not result.flagged
    leak = check_column("d", _cells(y), y, train, ["neg", "pos"])
    assert leak.leaks and leak.score == 1.0


def test_a_value_that_settles_one_class_is_found():
    """dx_type in HAM10000: 'follow_up' only ever for naevi, while the column predicts no other class."""
    y, train, rng = _data(n=1200)
    how = rng.choice(["histo", "consensus"], len(y)).astype(object)
    how[(y == 0) & (rng.random(len(y)) < 0.5)] = "follow_up"
    result = check_column("how", how, y, train, NAMES)
    assert not result.leaks and result.score < 0.5
    (finding,) = result.determines
    assert finding["class"] == "a" and finding["values"] == ["follow_up"] and finding["precision"] == 1.0
    held_a = (~train) & (y == 0)
    assert finding["coverage"] == pytest.approx((how[held_a] == "follow_up").mean())
    assert finding["coverage"] >= 0.25 and result.verdict().startswith("determines a (follow_up: 100% of")


def test_a_coarser_copy_of_the_label_is_derived_from_it():
    y, train, _ = _data()
    malignant = _cells((y >= 2).astype(int))  # a, b benign; c, d malignant
    result = check_column("malignant", malignant, y, train, NAMES)
    assert result.derived and not result.leaks and result.score < 0.6
    assert result.verdict() == "derived from the label"


def test_tree_split_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 300)
    y = (x + rng.normal(0, 0.7, 300) > 0.4).astype(np.int64) + (x > 1.2)
    (cut,) = tree_thresholds(x, y, 3, depth=1, min_leaf=5)
    best, best_cut = np.inf, None
    xs = np.sort(np.unique(x))
    for lo, hi in zip(xs[:-1], xs[1:], strict=True):
        t = (lo + hi) / 2
        left, right = y[x < t], y[x >= t]
        if len(left) < 5 or len(right) < 5:
            continue
        gini = sum(len(s) * (1 - ((np.bincount(s, minlength=3) / len(s)) ** 2).sum()) for s in (left, right))
        if gini < best - 1e-12:
            best, best_cut = gini, t
    assert cut == pytest.approx(best_cut)
    assert len(tree_thresholds(x, y, 3, depth=3)) <= 7
    assert tree_thresholds(np.ones(50), np.arange(50) % 2, 2) == []  # one value: nothing to split


def _manifest(root: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        label = ["benign", "malignant", "other"][i % 3]
        confirmed = "biopsy" if label != "benign" else "biopsy" if rng.random() < 0.4 else "follow-up"
        rows.append(
            [
                f"img/{i}.png",
                label,
                f"p{i // 2}",
                f"L{label}" if rng.random() > 0.01 else "?",
                rng.integers(20, 90),
                rng.choice(["f", "m"]),
                confirmed,
            ]
        )
    path = root / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient_id", "code", "age", "sex", "confirmed"])
        writer.writerows(rows)
    return path


def test_audit_flags_leaking_manifest_columns(tmp_path):
    report = audit(str(_manifest(tmp_path)))
    found = {c.column: c for c in report.columns}
    assert set(found) == {"code", "age", "sex", "confirmed"}, "path, label and the patient column are not scored"
    assert found["code"].leaks and not found["age"].flagged and not found["sex"].flagged
    assert found["confirmed"].determines and found["confirmed"].determines[0]["class"] == "benign"
    assert report.column_warnings[0] == "column 'code' leaks the label"
    assert not report.leakage_found, "a leaking column is not split leakage"
    assert "by patient_id" in report.columns_split
    text = format_report(report)
    assert "Columns that give the label away" in text and "  - column 'code' leaks the label" in text
    assert report_to_dict(report)["columns"][0]["column"] == "code"


def test_audit_label_column_option(tmp_path):
    path = _manifest(tmp_path)
    report = audit(str(path), label_column="confirmed")
    found = {c.column: c for c in report.columns}
    assert "confirmed" not in found and "label" in found
    assert found["label"].metric == "auc" and found["label"].derived is False


def test_cli_audit_prints_the_leaking_columns(tmp_path, run_cli):
    res = run_cli("audit", _manifest(tmp_path), "--json", tmp_path / "a.json")
    assert res.code == 0, res.err
    assert "Columns as predictors of the label on their own" in res.out
    assert "  - column 'code' leaks the label" in res.out
    other = run_cli("audit", tmp_path / "m.csv", "--label-column", "confirmed")
    assert other.code == 0, other.err
    warned = other.out.split("give the label away")[-1]
    assert "column 'label' determines biopsy" in warned and "column 'code' determines biopsy" in warned
    bad = run_cli("audit", tmp_path / "m.csv", "--label-column", "nope")
    assert bad.code == 2 and "label_column 'nope'" in bad.err


def test_a_patient_id_repeated_in_another_column_is_never_printed(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        mine = i < 60  # one patient's 60 images, in train and test, all benign
        patient = "P-SECRET-7" if mine else f"q{i}"
        label = "benign" if mine else rng.choice(["benign", "malignant"])
        split = ("train" if i < 40 else "test") if mine else rng.choice(["train", "test"])
        rows.append([f"img/{i}.png", label, patient, patient, split])
    path = tmp_path / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "label", "patient_id", "who", "split"], *rows])
    report = audit(str(path))
    (who,) = report.columns
    assert who.column == "who" and who.determines[0]["values"] == ["(a patient ID)"]
    assert "P-SECRET" not in format_report(report) and "P-SECRET" not in str(report_to_dict(report)["columns"])
