"""split_indices: seeded, stratified, and patient-grouped splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medclass.data.splits import split_indices
from medclass.errors import DataError


def _check_partition(idx: dict[str, np.ndarray], n: int) -> None:
    assert set(idx) == {"train", "val", "test"}
    everything = np.concatenate(list(idx.values()))
    assert np.array_equal(np.sort(everything), np.arange(n))  # every row exactly once
    for rows in idx.values():
        assert np.array_equal(rows, np.sort(rows))


def test_stratified_class_proportions():
    labels = np.repeat([0, 1, 2], [300, 100, 50]).astype(np.float32)
    idx = split_indices(labels, val=0.1, test=0.2, seed=0)
    _check_partition(idx, labels.size)
    overall = np.bincount(labels.astype(int)) / labels.size
    for name, frac in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        counts = np.bincount(labels[idx[name]].astype(int), minlength=3)
        assert abs(counts.sum() - frac * labels.size) <= 3
        assert np.allclose(counts / counts.sum(), overall, atol=0.02), (name, counts)
    # per class, the split sizes are the rounded fractions of that class
    assert np.bincount(labels[idx["test"]].astype(int)).tolist() == [60, 20, 10]
    assert np.bincount(labels[idx["val"]].astype(int)).tolist() == [30, 10, 5]


def test_unknown_labels_form_their_own_stratum():
    labels = np.array([0.0] * 20 + [1.0] * 20 + [np.nan] * 10, dtype=np.float32)
    idx = split_indices(labels, val=0.2, test=0.2, seed=3)
    _check_partition(idx, labels.size)
    assert np.isnan(labels[idx["test"]]).sum() == 2 and np.isnan(labels[idx["val"]]).sum() == 2


def test_multilabel_rows():
    rng = np.random.default_rng(0)
    labels = (rng.random((80, 3)) < 0.4).astype(np.float32)
    labels[rng.random((80, 3)) < 0.1] = np.nan
    idx = split_indices(labels, val=0.1, test=0.2, seed=0)
    _check_partition(idx, 80)
    assert len(idx["test"]) > 0 and len(idx["val"]) > 0


def test_seeded():
    labels = (np.arange(200) % 2).astype(np.float32)
    a = split_indices(labels, val=0.1, test=0.2, seed=7)
    b = split_indices(labels, val=0.1, test=0.2, seed=7)
    c = split_indices(labels, val=0.1, test=0.2, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0), (1.0, 0.0)])
def test_invalid_fractions(val, test):
    with pytest.raises(DataError, match="invalid split fractions"):
        split_indices(np.zeros(10, dtype=np.float32), val=val, test=test, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 2)), min_size=1, max_size=120),
    val=st.floats(0, 0.4),
    test=st.floats(0, 0.4),
    seed=st.integers(0, 2**31),
)
def test_groups_never_cross_splits(data, val, test, seed):
    groups = np.array([f"patient{g}" for g, _ in data], dtype=object)
    labels = np.array([y for _, y in data], dtype=np.float32)
    idx = split_indices(labels, val=val, test=test, seed=seed, groups=groups)
    _check_partition(idx, len(data))
    members = {k: set(groups[v].tolist()) for k, v in idx.items()}
    assert not members["train"] & members["val"]
    assert not members["train"] & members["test"]
    assert not members["val"] & members["test"]


def test_grouped_split_keeps_proportions_of_groups():
    # 100 patients with 3 images each; a patient's images share its label
    patient_label = (np.arange(100) % 4 == 0).astype(np.float32)
    groups = np.repeat(np.arange(100), 3)
    labels = np.repeat(patient_label, 3)
    idx = split_indices(labels, val=0.1, test=0.2, seed=0, groups=groups)
    _check_partition(idx, 300)
    assert len(idx["test"]) == 60 and len(idx["val"]) == 30  # whole patients: 20 and 10 of them
    assert labels[idx["test"]].mean() == pytest.approx(0.25)
