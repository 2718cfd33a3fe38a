"""The server's rounds against an in-process grid: strategies end to end, --min-clients, --resume, refusals.

``FakeGrid`` delivers each message to :func:`medclass.federated.apps.handle` (the real client code) and returns its
reply, or nothing for a node that is down, as Flower's ``Grid`` would after a timeout; no runtime is started.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medclass.errors import ConfigError
from medclass.federated.client import ClientSource
from medclass.federated.server import ServerSettings, run_rounds


class FakeGrid:
    """``get_node_ids`` and ``send_and_receive`` over clients in this process."""

    def __init__(self, sources: dict[int, ClientSource]) -> None:
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a runtime sets
        self.sources = sources
        self.contexts = {n: Context(1, n, {}, RecordDict(), {}) for n in sources}
        self.down: set[int] = set()
        self.sent: list = []

    def get_node_ids(self) -> list[int]:
        return [n for n in self.sources if n not in self.down]

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        from medclass.federated.apps import handle

        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.down:
                continue
            try:
                replies.append(handle(msg, self.contexts[node], self.sources[node]))
            except Exception as err:  # noqa: BLE001 - the runtime turns a ClientApp's exception into an error reply
                replies.append(Message(error=Error(0, f"<class 'x'>:<'{err}'>"), reply_to=msg))
        return replies


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, make_npz) -> Path:
    return make_npz(tmp_path_factory.mktemp("srv") / "d.npz", sizes=(48, 16, 16), size=16)


def _sources(data: Path, n: int) -> dict[int, ClientSource]:
    return {100 + k: ClientSource(str(data), "iid", n, k, 0) for k in range(n)}


def _settings(out: Path, **kw) -> ServerSettings:
    return ServerSettings(out=str(out), batch_size=16, baseline=False, timeout=1, **kw)


@pytest.mark.parametrize("strategy", ["fedadam", "fedprox", "fedavgm"])
def test_rounds_of_a_strategy_and_messages_carry_no_data(data: Path, tmp_path: Path, strategy: str) -> None:
    grid = FakeGrid(_sources(data, 2))
    section = run_rounds(grid, _settings(tmp_path / "run", rounds=2, strategy=strategy, min_clients=2))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["round"] == 2 and state["adam_step"] == (0 if strategy == "fedprox" else 2)
    assert [r["clients"] for r in section["history"]] == [2, 2]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    for msg in grid.sent:  # the plan, the model and counts: never a path or an image
        assert set(msg.content.keys()) <= {"config", "arrays"}
        config = msg.content["config"]
        assert str(data) not in json.dumps({k: config[k] for k in config}, default=str)
    assert {msg.content["config"]["mu"] for msg in grid.sent if "arrays" in msg.content} == {
        0.01 if strategy == "fedprox" else 0.0
    }


def test_a_client_down_is_left_out_and_min_clients_decides(data: Path, tmp_path: Path) -> None:
    grid = FakeGrid(_sources(data, 3))
    settings = _settings(tmp_path / "a", rounds=2, min_clients=2)

    calls = {"n": 0}
    original = grid.send_and_receive

    def flaky(messages, *, timeout=None):  # node 102 dies once round 1's model is sent, and is back for round 2
        messages = list(messages)
        first = any("arrays" in m.content for m in messages) and calls["n"] == 0
        calls["n"] += first
        grid.down = {102} if first else grid.down
        replies = original(messages, timeout=timeout)
        grid.down = set()
        return replies

    grid.send_and_receive = flaky
    section = run_rounds(grid, settings)
    assert [r["clients"] for r in section["history"]] == [2, 3]

    grid2 = FakeGrid(_sources(data, 3))
    grid2.down = {101, 102}  # only one client answers: short of --min-clients 2, retried, then an error
    with pytest.raises(ConfigError, match="1 clients answered; --min-clients is 2"):
        run_rounds(grid2, _settings(tmp_path / "b", rounds=1, min_clients=2))


def test_the_plan_holds_what_clients_train_by() -> None:
    from medclass.federated.client import PLAN_KEYS

    plan = ServerSettings(out="x", strategy="fedprox", mu=0.5).plan()
    assert set(plan) == set(PLAN_KEYS) and plan["mu"] == 0.5
    assert all(v is not None for v in plan.values())  # Flower's records hold no None
    assert ServerSettings(out="x", strategy="fedavg", mu=0.5).plan()["mu"] == 0.0


def test_server_optimiser_defaults_per_strategy_and_one_line_errors() -> None:
    assert ServerSettings(out="x", strategy="fedadam").server_lr == 0.01
    assert ServerSettings(out="x", strategy="fedavgm").server_lr == 1.0
    assert ServerSettings(out="x", strategy="fedavgm", server_lr=3.0).server_lr == 3.0
    with pytest.raises(ConfigError, match="server_momentum < 1, got 1.0 and 1.5"):
        ServerSettings(out="x", strategy="fedavgm", server_momentum=1.5)


def test_resume_continues_after_the_last_completed_round(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_rounds(FakeGrid(_sources(data, 2)), _settings(out, rounds=1, strategy="fedadam", min_clients=2))
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_rounds(FakeGrid(_sources(data, 2)), _settings(tmp_path / "none", rounds=2, min_clients=2, resume=True))
    section = run_rounds(
        FakeGrid(_sources(data, 2)), _settings(out, rounds=3, strategy="fedadam", min_clients=2, resume=True)
    )
    assert [r["epoch"] for r in section["history"]] == [1, 2, 3]
    assert json.loads((out / "state.json").read_text())["adam_step"] == 3  # the server optimiser's moments too


def test_a_client_with_other_labels_is_refused_and_left_out(data: Path, tmp_path: Path, make_npz) -> None:
    other = make_npz(tmp_path / "o.npz", task="multiclass", num_classes=3, sizes=(30, 10, 10), size=16)
    sources = {**_sources(data, 2), 200: ClientSource(str(other))}
    section = run_rounds(FakeGrid(sources), _settings(tmp_path / "run", rounds=1, min_clients=2))
    assert [c["client"] for c in section["clients"]] == ["client-0", "client-1"]
    log = (tmp_path / "run" / "federation.json").read_text()
    assert str(other) not in log


def test_differential_privacy_is_spent_per_client_and_reported_for_the_run(data: Path, tmp_path: Path) -> None:
    from medclass.checkpoint import load_model

    grid = FakeGrid(_sources(data, 2))
    out = tmp_path / "dp"
    settings = _settings(out, rounds=2, min_clients=2, model="smallcnn", dp_epsilon=6.0, lr=0.5)
    section = run_rounds(grid, settings)
    priv = section["privacy"]
    eps = [c["epsilon"] for c in priv["clients"].values()]
    assert sorted(priv["clients"]) == ["client-0", "client-1"] and priv["delta"] == 1e-5
    assert all(5.9 < e <= 6.0 + 1e-9 for e in eps) and priv["epsilon"] == max(eps)
    assert [r["epsilon"] for r in section["history"]][-1] == pytest.approx(max(eps), abs=1e-3)
    assert all("medclass-dp" in c.state for c in grid.contexts.values())  # the accountant outlives the process
    model, meta = load_model(out)
    assert meta["architecture"]["norm"] == "group"
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_a_private_client_restarted_with_a_resumed_server_keeps_counting_its_budget(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDCLASS_CACHE_DIR", str(tmp_path / "cache"))  # where each client keeps its accountant
    out = tmp_path / "dp"
    settings = _settings(out, rounds=2, min_clients=2, model="smallcnn", dp_epsilon=6.0, lr=0.5)
    grid = FakeGrid(_sources(data, 2))
    original = grid.send_and_receive

    def server_dies_in_round_2(messages, *, timeout=None):
        messages = list(messages)
        if any("arrays" in m.content and m.content["config"]["round"] == 2 for m in messages):
            raise RuntimeError("server killed")
        return original(messages, timeout=timeout)

    grid.send_and_receive = server_dies_in_round_2
    with pytest.raises(RuntimeError, match="server killed"):
        run_rounds(grid, settings)
    assert len(list((tmp_path / "cache" / "dp-accountants").glob("*.json"))) == 2
    restarted = FakeGrid(_sources(data, 2))  # new client processes: Flower's node state is gone
    section = run_rounds(restarted, _settings(out, rounds=2, min_clients=2, model="smallcnn", dp_epsilon=6.0, lr=0.5,
                                              resume=True))  # fmt: skip
    eps = [c["epsilon"] for c in section["privacy"]["clients"].values()]
    assert all(5.9 < e <= 6.0 + 1e-9 for e in eps), eps  # round 1's steps still count
    from medclass.federated.privacy import federation_steps

    for client in section["clients"]:  # every planned step taken once: round 1 before the restart, round 2 after
        planned = federation_steps(client["n"]["train"], 16, rounds=2, local_epochs=1)
        assert section["privacy"]["clients"][client["client"]]["steps"] == planned


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"strategy": "fedbn"}, "strategy fedbn with differential privacy"),
        ({"strategy": "fedprox"}, "strategy fedprox with differential privacy"),
        ({"dp_delta": 2.0}, "delta must be in"),
        ({"dp_clip": -1.0}, "max_grad_norm must be > 0"),
    ],
)
def test_bad_privacy_settings_are_one_line_errors(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings(out="x", dp_epsilon=8.0, **kw)
    with pytest.raises(ConfigError, match="dp_epsilon"):
        ServerSettings(out="x", dp_epsilon=-1.0)


def test_init_from_a_run_is_round_one_s_global_model(data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = tmp_path / "public"
    run_rounds(FakeGrid(_sources(data, 2)), _settings(first, rounds=1, min_clients=2, seed=1))
    grid = FakeGrid(_sources(data, 2))
    run_rounds(grid, _settings(tmp_path / "b", rounds=1, min_clients=2, seed=2, init_from=str(first)))
    sent = next(m for m in grid.sent if "arrays" in m.content).content["arrays"].to_torch_state_dict()
    start = load_file(str(first / "model.safetensors"))
    assert set(sent) == set(start) and all(torch.equal(sent[k], start[k]) for k in start)
    fresh = FakeGrid(_sources(data, 2))  # without it, seed 2 starts elsewhere
    run_rounds(fresh, _settings(tmp_path / "c", rounds=1, min_clients=2, seed=2))
    other = next(m for m in fresh.sent if "arrays" in m.content).content["arrays"].to_torch_state_dict()
    assert not all(torch.equal(other[k], start[k]) for k in start if k.endswith("weight"))
    with pytest.raises(ConfigError, match="nowhere: --init-from names no run folder"):
        _settings(tmp_path / "d", init_from="nowhere")
