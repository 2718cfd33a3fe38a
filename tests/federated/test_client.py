"""A client's local training: medclass's loop, the FedProx hooks removed afterwards, the privacy hook, the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from medclass.errors import DataError
from medclass.federated.client import ClientSource, build_network, check_agrees, load_site, local_train, round_lr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, make_npz):
    data = make_npz(tmp_path_factory.mktemp("cl") / "d.npz", sizes=(40, 12, 12), size=16)
    return load_site(ClientSource(str(data), "iid", 2, 1, 0), {"recipe": "default", "batch_size": 16, "seed": 0})


class CountingPrivacy:
    """A stand-in for a DP engine: wraps nothing, counts optimiser steps, reports them."""

    def __init__(self) -> None:
        self.steps = 0

    def attach(self, model, optimizer, split, generator):
        optimizer.register_step_post_hook(lambda *_: setattr(self, "steps", self.steps + 1))
        return model, optimizer

    def spent(self) -> dict:
        return {"epsilon": 0.0, "steps": self.steps}


def test_local_training_moves_the_weights_and_reports_privacy(site) -> None:
    torch.manual_seed(0)
    model = build_network(site)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    privacy = CountingPrivacy()
    out = local_train(site, model, epochs=2, lr=3e-3, seed=1, privacy=privacy)
    assert out["n"] == len(site.dataset.splits["train"]) and math.isfinite(out["train_loss"])
    assert out["privacy"]["steps"] == privacy.steps > 0
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))  # BN stats moved
    assert int(after[next(k for k in after if k.endswith("num_batches_tracked"))]) == privacy.steps


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
