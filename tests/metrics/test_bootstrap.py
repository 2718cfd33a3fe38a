"""Bootstrap confidence intervals: row and patient-level (cluster) resampling."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medclass.metrics import UndefinedMetricWarning, accuracy, bootstrap_ci, resample_weights, roc_auc
from medclass.metrics.bootstrap import weighted_accuracy, weighted_roc_auc


def _binary_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    s = np.round(rng.random(n) * 0.6 + 0.3 * y, 2)
    return y, s


def test_ci_contains_point_estimate_and_is_reproducible() -> None:
    y, s = _binary_data()
    low, high = bootstrap_ci(roc_auc, y, s, seed=1)
    assert low < roc_auc(y, s) < high
    assert high - low < 0.15
    assert bootstrap_ci(roc_auc, y, s, seed=1) == (low, high)
    assert bootstrap_ci(roc_auc, y, s, seed=2) != (low, high)
    narrow = bootstrap_ci(roc_auc, y, s, seed=1, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_vectorised_path_equals_generic_path() -> None:
    y, s = _binary_data(n=200)
    y[::11] = np.nan
    fast = bootstrap_ci(roc_auc, y, s, n_resamples=300, seed=3)
    generic = bootstrap_ci(lambda a, b: roc_auc(a, b), y, s, n_resamples=300, seed=3)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-12)
    pred = (s > 0.45).astype(int)
    fast = bootstrap_ci(accuracy, y, pred, n_resamples=300, seed=3)
    generic = bootstrap_ci(lambda a, b: accuracy(a, b), y, pred, n_resamples=300, seed=3)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-12)
    groups = np.arange(200) // 4
    fast = bootstrap_ci(roc_auc, y, s, groups=groups, n_resamples=300, seed=3)
    generic = bootstrap_ci(lambda a, b: roc_auc(a, b), y, s, groups=groups, n_resamples=300, seed=3)
    np.testing.assert_allclose(fast, generic, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(
            st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=n, max_size=n),
            st.lists(st.integers(0, 5), min_size=n, max_size=n),
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
        )
    )
)
def test_weighted_auc_equals_auc_of_repeated_rows(sample: tuple[list[float], list[int], list[int]]) -> None:
    y, s, counts = np.array(sample[0]), np.array(sample[1]) / 5, np.array(sample[2])
    repeated = np.repeat(np.arange(y.size), counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = roc_auc(y[repeated], s[repeated])
        expected_acc = accuracy(y[repeated], (s[repeated] > 0.5).astype(int))
    got = weighted_roc_auc(y, s, counts[None, :])[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weighted_accuracy(y, (s > 0.5).astype(int), counts)[0], expected_acc, atol=1e-12)


def test_resample_weights_row_bootstrap() -> None:
    chunks = list(resample_weights(50, n_resamples=120, seed=0))
    weights = np.concatenate(chunks)
    assert weights.shape == (120, 50)
    np.testing.assert_array_equal(weights.sum(axis=1), 50)
    again = np.concatenate(list(resample_weights(50, n_resamples=120, seed=0)))
    np.testing.assert_array_equal(weights, again)


def test_cluster_bootstrap_keeps_groups_intact() -> None:
    # 40 patients with 3 identical rows each: a resample must hold each patient's rows together.
    groups = np.repeat(np.arange(40), 3)
    values = groups.astype(np.float64)
    weights = np.concatenate(list(resample_weights(120, groups=groups, n_resamples=200, seed=0)))
    assert np.all(weights.reshape(200, 40, 3) == weights.reshape(200, 40, 3)[:, :, :1])
    np.testing.assert_array_equal(weights.sum(axis=1), 120)  # groups of equal size: N rows each time

    def all_groups_whole(v: np.ndarray) -> float:
        return float(np.all(np.bincount(v.astype(int), minlength=40) % 3 == 0))

    assert bootstrap_ci(all_groups_whole, values, groups=groups, n_resamples=200) == (1.0, 1.0)
    row_low, _ = bootstrap_ci(all_groups_whole, values, n_resamples=200)
    assert row_low == 0.0


def test_cluster_bootstrap_widens_interval_for_correlated_rows() -> None:
    # Each patient contributes 5 copies of one sample: the row bootstrap understates the spread.
    y, s = _binary_data(n=120, seed=4)
    groups = np.repeat(np.arange(120), 5)
    y5, s5 = np.repeat(y, 5), np.repeat(s, 5)
    row = bootstrap_ci(roc_auc, y5, s5, n_resamples=400)
    cluster = bootstrap_ci(roc_auc, y5, s5, groups=groups, n_resamples=400)
    assert cluster[1] - cluster[0] > 1.5 * (row[1] - row[0])


def test_mostly_undefined_resamples_give_nan() -> None:
    with pytest.warns(UndefinedMetricWarning, match="fewer than half"):
        low, high = bootstrap_ci(roc_auc, np.zeros(30), np.linspace(0, 1, 30), n_resamples=100)
    assert np.isnan(low) and np.isnan(high)

    def defined_when_mean_is_high(v: np.ndarray) -> float:
        return float(v.mean()) if v.mean() > 52 else float("nan")

    values = np.arange(100, dtype=np.float64)  # resample means ~ N(49.5, 2.9): mostly undefined
    with pytest.warns(UndefinedMetricWarning, match="fewer than half"):
        assert np.isnan(bootstrap_ci(defined_when_mean_is_high, values, n_resamples=200)[0])
    # One positive in 30 rows: about 64% of resamples contain it, enough for an interval.
    y = np.zeros(30)
    y[0] = 1
    low, high = bootstrap_ci(roc_auc, y, np.linspace(0, 1, 30), n_resamples=200)
    assert 0.0 <= low <= high <= 1.0


def test_vector_valued_statistic() -> None:
    y, s = _binary_data(n=200)
    low, high = bootstrap_ci(lambda a, b: np.array([roc_auc(a, b), np.mean(a)]), y, s, n_resamples=200)
    assert low.shape == high.shape == (2,)
    assert np.all(low < high)
    assert low[0] == bootstrap_ci(roc_auc, y, s, n_resamples=200)[0]


def test_invalid_arguments() -> None:
    y, s = _binary_data(n=20)
    with pytest.raises(ValueError):
        bootstrap_ci(roc_auc, y, s[:10])
    with pytest.raises(ValueError):
        bootstrap_ci(roc_auc, y, s, confidence=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(roc_auc, y, s, groups=np.arange(5))


def test_auc_bootstrap_is_fast() -> None:
    y, s = _binary_data(n=600)
    bootstrap_ci(roc_auc, y, s, n_resamples=10)
    start = time.perf_counter()
    bootstrap_ci(roc_auc, y, s, n_resamples=1000)
    assert time.perf_counter() - start < 1.0
