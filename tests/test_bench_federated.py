"""``bench/federated.py``'s target lines from a hand-made results dict (no training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

NAN = float("nan")


@pytest.fixture(scope="module")
def bench(import_bench: Callable[[str], ModuleType]) -> ModuleType:
    return import_bench("federated")


def _dirichlet() -> dict:
    """Two seeds; FedAvg's rows carry the local-only AUCs, FedProx's do not (the first strategy trains them)."""
    return {
        "fedavg": {
            "0": {"auc": 0.95, "client_auc": [0.96, NAN, 0.90], "local_auc": [0.95, 0.99, 0.80]},
            "1": {"auc": 0.96, "client_auc": [0.97, 0.93], "local_auc": [0.975, 0.70]},
        },
        "fedprox": {
            "0": {"auc": 0.90, "client_auc": [0.99, 0.99, 0.99]},
            "1": {"auc": 0.90, "client_auc": [0.99, 0.99]},
        },
    }


def test_client_margins_pair_each_client_with_its_own_local_model(bench: ModuleType) -> None:
    # seed 0: client 1 has no federated AUC (one-class test) and is left out; seed 1's local AUCs pair with seed 1
    assert bench.client_margins(_dirichlet(), "fedavg") == pytest.approx([0.01, 0.10, -0.005, 0.23])
    assert bench.client_margins(_dirichlet(), "fedprox") == pytest.approx([0.04, 0.0, 0.19, 0.015, 0.29])
    assert bench.client_margins(_dirichlet(), "fedbn") == []


def test_dirichlet_target_needs_the_best_strategy_ahead_on_every_client(bench: ModuleType) -> None:
    parts = {"dirichlet:0.3": _dirichlet()}
    lines = [line for line in bench._targets("breastmnist", parts, 0.97, NAN) if "local-only" in line]
    assert len(lines) == 1
    assert "fedavg" in lines[0] and "ahead in 3 of 4" in lines[0] and "-0.005" in lines[0]
    assert lines[0].endswith("not met")
    parts["dirichlet:0.3"]["fedavg"]["1"]["local_auc"][0] = 0.96
    (line,) = [x for x in bench._targets("breastmnist", parts, 0.97, NAN) if "local-only" in x]
    assert "ahead in 4 of 4" in line and line.endswith(": met")


def test_dp_merge_keeps_recorded_runs_and_replaces_failed_ones(import_bench: Callable[[str], ModuleType]) -> None:
    dp = import_bench("federated_dp")
    into = {"commands": ["a"], "results": {"dp eps 8|m|10 x 4": {"0": {"auc": 0.94}, "1": {"error": "killed"}}}}
    other = {
        "commands": ["a", "b"],
        "machine": "cpu",
        "results": {
            "dp eps 8|m|10 x 4": {"0": {"auc": 0.5}, "1": {"auc": 0.93}},
            "plain|m|10 x 4": {"1": {"auc": 0.97}},
        },
    }
    dp.merge(into, other)
    assert into["commands"] == ["a", "b"] and into["machine"] == "cpu"
    assert into["results"]["dp eps 8|m|10 x 4"] == {"0": {"auc": 0.94}, "1": {"auc": 0.93}}
    assert into["results"]["plain|m|10 x 4"] == {"1": {"auc": 0.97}}


def _ham() -> tuple[dict, dict]:
    """Dirichlet 0.5 rows of two strategies over two seeds, and pooled runs with (seed 0, 1) and without (2) per-client
    figures."""
    methods = {
        "fedavg": {
            "0": {"bacc": 0.30, "client_bacc": [0.5, 0.3], "local_bacc": [0.2, 0.2]},
            "1": {"bacc": 0.30, "client_bacc": [0.4, 0.4], "local_bacc": [0.3, 0.1]},
            "2": {"bacc": 0.30, "client_bacc": [0.9, 0.9], "local_bacc": [0.0, 0.0]},
        },
        "fedprox": {"0": {"bacc": 0.99, "client_bacc": [0.3, 0.3]}, "1": {"bacc": 0.99, "client_bacc": [0.3, 0.3]}},
    }
    pooled = {
        "0": {"bacc": 0.9, "client_bacc": {"dirichlet:0.5": [0.6, 0.6]}},
        "1": {"bacc": 0.9, "client_bacc": {"dirichlet:0.5": [0.6, 0.6]}},
        "2": {"bacc": 0.9},
    }
    return methods, pooled


def test_dermoscopy_gap_compares_all_three_on_each_clients_own_test(bench: ModuleType) -> None:
    methods, pooled = _ham()
    fair = bench.gap_closed_own_tests(methods, pooled, "dirichlet:0.5")
    # seeds 0 and 1 only (seed 2 has no pooled per-client figures): local 0.2, pooled 0.6, fedavg 0.4, fedprox 0.3
    assert fair["seeds"] == ["0", "1"] and fair["best"] == "fedavg"
    assert fair["local"] == pytest.approx(0.2) and fair["pooled"] == pytest.approx(0.6)
    assert fair["fed"] == pytest.approx(0.4) and fair["closed"] == pytest.approx(0.5)
    (line,) = bench._gap_closed(methods, 0.9, pooled)
    assert "own test" in line and "closes 50%" in line and line.endswith("not met")
    (old,) = bench._gap_closed(methods, 0.9, {"0": {"bacc": 0.9}})  # older results: the mixed measure, said so
    assert "mixed comparison" in old and "fedprox" in old


def test_pooled_model_is_scored_on_each_clients_own_test_rows(
    bench: ModuleType, small_binary_run: tuple[Path, Path]
) -> None:
    import argparse

    import numpy as np

    import medclass
    from medclass.federated import partition as part

    run, data = small_binary_run
    args = argparse.Namespace(clients=2, batch_size=None, image_size=None, settings={})
    got = bench.pooled_on_clients(str(data), 0, "dirichlet:0.5", args, run)
    dataset = medclass.load_dataset(str(data))
    labels, groups, _, _ = part.all_rows(dataset)
    assignment = part.assign_clients(labels, 2, part.parse_partition("dirichlet:0.5"), seed=0, groups=groups)
    predictor = medclass.load(run)
    for k in range(2):
        test = part.client_dataset(dataset, assignment, k).splits["test"]
        truth = test.labels.reshape(-1).astype(int)
        decided = (predictor.predict_proba(test.images.numpy())[:, 1] > 0.5).astype(int)
        recalls = [np.mean(decided[truth == c] == c) for c in np.unique(truth)]
        assert got[k] == pytest.approx(float(np.mean(recalls)), abs=1e-9)
