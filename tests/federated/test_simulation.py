"""``medclass federate`` on Flower's simulation engine: an ordinary run folder that ``evaluate`` takes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medclass.errors import ConfigError


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory, make_npz, cli_main) -> tuple[Path, Path, int]:
    """FedBN, 2 clients, 2 rounds on a shifted split of a small synthetic binary set (one simulation per module)."""
    root = tmp_path_factory.mktemp("fed")
    data = make_npz(root / "d.npz", sizes=(64, 24, 24), size=16)
    code = cli_main(
        ["federate", "--data", data, "--clients", "2", "--partition", "shift", "--strategy", "fedbn", "--rounds", "2",
         "--batch-size", "16", "--set", "optim.logit_adjust=1", "--out", root / "run", "--quiet"]
    )  # fmt: skip
    return root / "run", data, code


def test_run_folder_metrics_and_report(fed_run: tuple[Path, Path, int]) -> None:
    run, _, code = fed_run
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["splits"]["test"]["n"] == 24  # the global test: the union of both clients' test rows
    fed = metrics["federated"]
    assert fed["strategy"] == "fedbn" and fed["partition"] == "shift" and fed["n_clients"] == 2
    assert [c["client"] for c in fed["clients"]] == ["client-0", "client-1"]
    assert sum(c["n"]["test"] for c in fed["clients"]) == 24
    for c in fed["clients"]:  # each client's own test of the federated model, and its local-only baseline
        assert 0 <= c["federated"]["test"]["auc"] <= 1 and 0 <= c["local_only"]["test"]["auc"] <= 1
    assert [r["epoch"] for r in fed["history"]] == [1, 2] and all(r["clients"] == 2 for r in fed["history"])
    assert all(r["lr"] > 0 for r in fed["history"])
    assert fed["mb_per_round"] > 0
    report = (run / "report.html").read_text()
    assert "fedbn" in report and "<svg" in report
    state = json.loads((run / "state.json").read_text())
    assert state["round"] == 2  # the checkpoint of the last completed round (for --resume)
    assert json.loads((run / "model.json").read_text())["threshold"] is not None  # calibrated like a train run
    assert "logit_adjust: 1.0" in (run / "config.yaml").read_text()  # --set reached the clients' configuration


def test_evaluate_takes_the_federated_run(fed_run: tuple[Path, Path, int], run_cli) -> None:
    run, data, _ = fed_run
    res = run_cli("evaluate", "--checkpoint", run, "--data", data, "--out", run.parent / "eval")
    assert res.code == 0, res.err
    m = json.loads((run.parent / "eval" / "metrics.json").read_text())
    assert np.isfinite(m["splits"]["test"]["auc"])


def test_bad_options_are_one_line_errors(run_cli, tmp_path: Path) -> None:
    res = run_cli("federate", "--data", "x.npz", "--partition", "dirichlet:0", "--out", tmp_path / "r")
    assert res.code == 2 and res.err.count("\n") == 1 and "ALPHA must be > 0" in res.err
    res = run_cli("federate", "--role", "server", "--data", "x.npz", "--out", tmp_path / "r", "--insecure")
    assert res.code == 2 and "the server holds no data" in res.err
    res = run_cli("federate", "--data", "x.npz", "--strategy", "fedbn", "--dp-epsilon", "8", "--out", tmp_path / "r")
    assert res.code == 2 and res.err.count("\n") == 1 and "strategy fedbn with differential privacy" in res.err
    res = run_cli("federate", "--data", "x.npz", "--set", "epochs=3", "--out", tmp_path / "r")
    assert res.code == 2 and res.err.count("\n") == 1 and "expected SECTION.KEY=VALUE" in res.err


def test_api_rejects_unknown_strategy() -> None:
    import medclass

    with pytest.raises(ConfigError, match="unknown strategy"):
        medclass.federate("x.npz", strategy="scaffold")


def test_deployment_roles_in_the_api_refuse_bad_settings_in_one_line(tmp_path: Path) -> None:
    import medclass

    with pytest.raises(ConfigError, match="holds no data"):
        medclass.federate_server(tmp_path / "r", insecure=True, data="x.npz")
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        medclass.federate_server(tmp_path / "r", listen="localhost", insecure=True)
    with pytest.raises(ConfigError, match="unknown strategy"):
        medclass.federate_server(tmp_path / "r", insecure=True, strategy="scaffold")
    with pytest.raises(ConfigError, match="give --certificates DIR"):
        medclass.federate_server(tmp_path / "r")
    with pytest.raises(ConfigError, match="no such certificate file"):
        medclass.federate_client("x.npz", "127.0.0.1:9092", root_certificates=tmp_path / "none.pem")
