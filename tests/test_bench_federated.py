"""``bench/federated.py``'s target lines from a hand-made results dict (no training)."""

from __future__ import annotations

from collections.abc import Callable
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
