"""Label subsets (``data.labels``): stratified, whole patients, at least one image per class, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass.data.dataset import Split
from medclass.data.labelled import label_subset, requested_count
from medclass.errors import ConfigError


def _split(labels: np.ndarray, patient_ids: np.ndarray | None = None) -> Split:
    n = len(labels)
    return Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels.astype(np.float32), patient_ids)


def _check_partition(split: Split, labelled: np.ndarray, unlabelled: np.ndarray) -> None:
    assert labelled.dtype == np.int64 and unlabelled.dtype == np.int64
    assert np.all(np.diff(labelled) > 0) and np.all(np.diff(unlabelled) > 0)
    assert np.array_equal(np.sort(np.concatenate([labelled, unlabelled])), np.arange(len(split)))


def test_binary_subset_is_stratified_with_exact_counts_without_patients():
    y = np.array([1] * 50 + [0] * 150)
    np.random.default_rng(1).shuffle(y)
    split = _split(y)
    labelled, unlabelled = label_subset(split, 40, seed=0, task="binary", num_classes=2)
    _check_partition(split, labelled, unlabelled)
    assert len(labelled) == 40
    assert np.bincount(y[labelled], minlength=2).tolist() == [30, 10]


def test_multiclass_fraction_keeps_the_class_shares():
    y = np.repeat([0, 1, 2, 3], [100, 60, 30, 10])
    split = _split(y)
    labelled, _ = label_subset(split, 0.1, seed=3, task="multiclass", num_classes=4)
    assert len(labelled) == 20
    assert np.bincount(y[labelled], minlength=4).tolist() == [10, 6, 3, 1]


def test_every_class_keeps_at_least_one_image_even_below_the_class_count():
    y = np.repeat([0, 1, 2], [97, 2, 1])
    labelled, _ = label_subset(_split(y), 2, seed=0, task="multiclass", num_classes=3)
    assert sorted(y[labelled].tolist()) == [0, 1, 2]
    labelled, _ = label_subset(_split(y), 0.01, seed=5, task="multiclass", num_classes=3)  # 1 image asked for
    assert set(y[labelled].tolist()) == {0, 1, 2}


def test_patients_are_never_split_and_counts_stay_close():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, size=120)
    pids = np.repeat([f"P{i:03d}" for i in range(len(sizes))], sizes)
    y = np.repeat((rng.random(len(sizes)) < 0.3).astype(int), sizes)  # one class per patient
    y[:3] = 1 - y[:3]  # and a few patients with both classes
    order = rng.permutation(len(y))
    split = _split(y[order], pids[order])
    for seed in range(4):
        labelled, unlabelled = label_subset(split, 60, seed=seed, task="binary", num_classes=2)
        _check_partition(split, labelled, unlabelled)
        assert not set(split.patient_ids[labelled]) & set(split.patient_ids[unlabelled])
        assert 60 <= len(labelled) <= 60 + 2 * 4, len(labelled)  # whole patients overshoot a little
        counts = np.bincount(split.labels[labelled].astype(int), minlength=2)
        share = split.labels.mean()
        assert abs(counts[1] / counts.sum() - share) < 0.1


def test_same_seed_same_subset_other_seed_another():
    y = np.arange(300) % 3
    split = _split(y)
    a = label_subset(split, 30, seed=7, task="multiclass", num_classes=3)
    b = label_subset(split, 30, seed=7, task="multiclass", num_classes=3)
    c = label_subset(split, 30, seed=8, task="multiclass", num_classes=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_unknown_labels_stay_with_their_patient_and_are_not_counted():
    y = np.array([0, 1, np.nan, 0, 1, np.nan, 0, 1], dtype=np.float32)
    pids = np.array(["a", "a", "a", "b", "b", "c", "d", "d"])
    split = _split(y, pids)
    labelled, unlabelled = label_subset(split, 4, seed=0, task="binary", num_classes=2)
    assert not set(pids[labelled]) & set(pids[unlabelled])
    assert "c" in set(pids[unlabelled])  # a patient with no known label is never labelled
    with pytest.raises(ConfigError, match="holds 6"):
        label_subset(split, 7, seed=0, task="binary", num_classes=2)


def test_multilabel_takes_a_positive_of_every_label():
    rng = np.random.default_rng(2)
    y = (rng.random((200, 4)) < [0.5, 0.3, 0.1, 0.02]).astype(np.float32)
    y[rng.random(y.shape) < 0.05] = np.nan
    split = _split(y)
    labelled, unlabelled = label_subset(split, 12, seed=1, task="multilabel", num_classes=4)
    _check_partition(split, labelled, unlabelled)
    assert len(labelled) == 12
    has = np.nansum(y, axis=0) > 0
    assert np.all(np.nansum(y[labelled], axis=0)[has] >= 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "must be a number"), (-3, "must be a number"), (float("nan"), "must be a number"), (2.5, "whole number")],
)
def test_bad_values_are_one_line_config_errors(value, message):
    with pytest.raises(ConfigError, match=message) as err:
        label_subset(_split(np.arange(10) % 2), value, seed=0, task="binary", num_classes=2)
    assert "\n" not in str(err.value) and str(err.value).startswith("data.labels: ")


def test_more_labels_than_the_split_holds_is_an_error_and_all_of_them_is_not():
    split = _split(np.arange(10) % 2)
    with pytest.raises(ConfigError, match="11 labelled images asked for, but the training split holds 10"):
        label_subset(split, 11, seed=0, task="binary", num_classes=2)
    labelled, unlabelled = label_subset(split, 10, seed=0, task="binary", num_classes=2)
    assert len(labelled) == 10 and len(unlabelled) == 0
    assert requested_count(0.5, 10) == 5 and requested_count(1, 10) == 1 and requested_count(0.001, 10) == 1
