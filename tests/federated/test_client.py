"""A client's local training: medclass's loop, the FedProx hooks removed afterwards, the privacy hook, the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from medclass.errors import ConfigError, DataError
from medclass.federated.client import ClientSource, build_network, check_agrees, load_site, local_train, round_lr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, make_npz):
    data = make_npz(tmp_path_factory.mktemp("cl") / "d.npz", sizes=(40, 12, 12), size=16)
    return load_site(ClientSource(str(data), "iid", 2, 1, 0), {"recipe": "default", "batch_size": 16, "seed": 0})


def test_local_training_moves_the_weights_and_batchnorm_statistics(site) -> None:
    torch.manual_seed(0)
    model = build_network(site)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = local_train(site, model, epochs=2, lr=3e-3, seed=1)
    assert out["n"] == len(site.dataset.splits["train"]) and math.isfinite(out["train_loss"])
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))  # BN stats moved
    steps = math.ceil(out["n"] / site.cfg.train.batch_size) * 2
    assert int(after[next(k for k in after if k.endswith("num_batches_tracked"))]) == steps


def test_private_rounds_spend_the_budget_exactly_by_the_last_round(site, make_npz, tmp_path) -> None:
    from medclass.federated.client import local_train_private, privacy_config

    plan = {"recipe": "default", "batch_size": 8, "seed": 0, "model": "smallcnn", "dp_epsilon": 4.0}
    data = make_npz(tmp_path / "p.npz", sizes=(40, 12, 12), size=16)
    private = load_site(ClientSource(str(data), "iid", 2, 1, 0), plan)
    assert private.meta["architecture"]["norm"] == "group"
    model = build_network(private)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    config = privacy_config(plan)
    assert config.batch_size == 8 and config.seed is None  # the server's plan never seeds the noise
    state, spent = None, []
    for r in (1, 2, 3):
        before = [p.detach().clone() for p in model.parameters()]
        out, state = local_train_private(
            private, model, config=config, rounds=3, round_index=r, epochs=1, lr=0.5, state=state
        )
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())  # Opacus's removed
        spent.append(out["epsilon"])
    assert spent[0] < spent[1] < spent[2] <= 4.0 + 1e-9 and spent[2] > 3.9  # the budget is spent by the last round
    assert out["lr"] == pytest.approx(0.5 * 0.5 * (1 + math.cos(2 * math.pi / 3)))
    with pytest.raises(Exception, match="privacy budget spent"):
        local_train_private(private, model, config=config, rounds=3, round_index=4, epochs=1, lr=0.5, state=state)


def test_fedprox_pulls_towards_the_start_and_leaves_no_hooks(site) -> None:
    def distance(mu: float) -> float:
        torch.manual_seed(0)
        model = build_network(site)
        start = {k: v.clone() for k, v in model.named_parameters()}
        local_train(site, model, epochs=2, lr=3e-2, mu=mu, seed=1)
        assert all(not p._backward_hooks for p in model.parameters())  # removed after the round
        return sum(float((p - start[n]).pow(2).sum()) for n, p in model.named_parameters())

    assert distance(100.0) < distance(0.0)


def test_round_lr_is_a_cosine_to_a_twentieth() -> None:
    assert round_lr(1.0, 1, 10) == pytest.approx(1.0)
    assert round_lr(1.0, 6, 10) == pytest.approx(0.05 + 0.95 * 0.5)
    assert round_lr(1.0, 10, 10) > 0.05


def test_check_agrees_names_what_differs(site) -> None:
    check_agrees(site.meta, dict(site.meta), "client 1")
    other = dict(site.meta, label_names=["x", "y"])
    with pytest.raises(DataError, match=r"^client 1: its data's label_names \["):
        check_agrees(site.meta, other, "client 1")


def test_a_client_reports_balanced_accuracy_as_the_mean_recall_of_its_classes(site) -> None:
    import numpy as np

    from medclass.federated.client import _balanced_accuracy, local_evaluate

    labels = np.array([0, 0, 0, 1, 2, 2])
    probs = np.eye(3)[[0, 0, 1, 1, 2, 0]] * 0.8 + 0.2 / 3  # recalls 2/3, 1, 1/2
    assert _balanced_accuracy(labels[:, None], probs, "multiclass") == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    binary = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])  # P(1) > 0.5: 0 1 1 1
    assert _balanced_accuracy(np.array([0, 0, 0, 1]), binary, "binary") == pytest.approx((1 / 3 + 1) / 2)
    figures = local_evaluate(site, build_network(site), "test")
    assert 0 <= figures["bacc"] <= 1


def test_the_plan_s_settings_win_over_the_recipe_on_every_client(make_npz, tmp_path) -> None:
    from medclass.federated.server import ServerSettings

    data = make_npz(tmp_path / "d.npz", sizes=(40, 12, 12), size=16)
    plan = ServerSettings(out="x", settings={"optim.logit_adjust": 1.0, "augment.rotate": 0}).plan()
    plan = {**plan, "batch_size": 16}
    tuned = load_site(ClientSource(str(data), "iid", 2, 0, 0), plan)
    assert tuned.cfg.optim.logit_adjust == 1.0 and tuned.cfg.augment.rotate == 0
    plain = load_site(ClientSource(str(data), "iid", 2, 0, 0), {**plan, "settings": ""})
    assert plain.cfg.optim.logit_adjust == 0.0 and plain.cfg.augment.rotate > 0  # not the cached site
    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        load_site(ClientSource(str(data), "iid", 2, 0, 0), {**plan, "settings": '{"optim.no_such_key": 1}'})
    with pytest.raises(ConfigError, match="'epochs' is not a dotted key"):
        ServerSettings(out="x", settings={"epochs": 3})
    with pytest.raises(ConfigError, match="values must be JSON"):
        ServerSettings(out="x", settings={"data.spec": tmp_path})
