"""Aggregation against hand-computed examples, batch-norm buffers and the integer counter included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medclass.federated.aggregate import (
    AdamState,
    add_proximal_gradient,
    batchnorm_keys,
    check_strategy,
    fedadam_step,
    fedavgm_step,
    parameter_keys,
    proximal_term,
    shared_keys,
    weighted_average,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))


def test_weighted_average_by_hand_with_bn_buffers_and_integer_counter() -> None:
    n = "bn.num_batches_tracked"
    a = {"w": torch.tensor([1.0, 2.0]), "bn.running_var": torch.tensor([1.0]), n: torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "bn.running_var": torch.tensor([4.0]), n: torch.tensor(8)}
    out = weighted_average([a, b], [1, 2])  # weights 1/3, 2/3
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.0]))
    assert torch.allclose(out["bn.running_var"], torch.tensor([3.0]))
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert int(out["bn.num_batches_tracked"]) == 6  # (3 + 16) / 3 = 6.33 -> 6
    assert out["w"].dtype == torch.float32


def test_fedavg_moves_running_stats_that_parameters_alone_would_miss() -> None:
    nets = [_net(), _net()]
    for i, net in enumerate(nets):
        net.train()
        net(torch.randn(16, 2) * (i + 1) + 5 * i)  # different statistics per client
    states = [n.state_dict() for n in nets]
    avg = weighted_average(states, [1, 1])
    mean = (states[0]["1.running_mean"] + states[1]["1.running_mean"]) / 2
    assert torch.allclose(avg["1.running_mean"], mean)
    assert "1.running_mean" not in parameter_keys(nets[0])  # a buffer: averaging parameters() would skip it
    assert int(avg["1.num_batches_tracked"]) == 1


def test_fedbn_keys_are_every_batchnorm_tensor() -> None:
    net = _net()
    keys = batchnorm_keys(net)
    assert keys == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert shared_keys(net.state_dict(), keys) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_proximal_gradient_equals_the_gradient_of_the_proximal_term() -> None:
    torch.manual_seed(0)
    net = _net()
    anchor = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    x = torch.randn(8, 2)

    net.zero_grad()
    (net(x).sum() + proximal_term(net, anchor, mu=0.5)).backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    handles = add_proximal_gradient(net, anchor, mu=0.5)
    net(x).sum().backward()
    for h in handles:
        h.remove()
    for n, p in net.named_parameters():
        assert torch.allclose(p.grad, expected[n], atol=1e-6), n


def test_proximal_term_by_hand() -> None:
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(-1.0)
    anchor = {"weight": torch.tensor([[1.0]]), "bias": torch.tensor([1.0])}
    assert float(proximal_term(net, anchor, mu=0.1).detach()) == pytest.approx(0.05 * (1 + 4))


def test_fedadam_two_steps_by_hand() -> None:
    g = {"w": torch.tensor([1.0]), "bn.running_mean": torch.tensor([0.0]), "bn.num_batches_tracked": torch.tensor(2)}
    avg = {"w": torch.tensor([1.5]), "bn.running_mean": torch.tensor([2.0]), "bn.num_batches_tracked": torch.tensor(4)}
    opt = AdamState(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    out = fedadam_step(g, avg, {"w"}, opt)
    m, v = 0.1 * 0.5, 0.01 * 0.25  # delta 0.5
    assert float(out["w"]) == pytest.approx(1.0 + 0.1 * m / (v**0.5 + 1e-3), rel=1e-6)
    assert float(out["bn.running_mean"]) == 2.0 and int(out["bn.num_batches_tracked"]) == 4  # statistics: averaged
    w1 = float(out["w"])
    out2 = fedadam_step(out, {**avg, "w": torch.tensor([w1 - 0.2])}, {"w"}, opt)  # delta -0.2
    m2, v2 = 0.9 * m + 0.1 * -0.2, 0.99 * v + 0.01 * 0.04
    assert float(out2["w"]) == pytest.approx(w1 + 0.1 * m2 / (v2**0.5 + 1e-3), rel=1e-5)
    assert opt.step == 2
    restored = AdamState()
    restored.load(opt.tensors(), opt.step)
    assert torch.equal(restored.m["w"], opt.m["w"]) and torch.equal(restored.v["w"], opt.v["w"])


def test_fedavgm_two_steps_by_hand() -> None:
    g = {"w": torch.tensor([1.0]), "bn.running_mean": torch.tensor([0.0])}
    avg = {"w": torch.tensor([1.5]), "bn.running_mean": torch.tensor([2.0])}
    opt = AdamState(lr=2.0)
    out = fedavgm_step(g, avg, {"w"}, opt, momentum=0.5)
    assert float(out["w"]) == pytest.approx(1.0 + 2.0 * 0.5)  # m = delta = 0.5
    assert float(out["bn.running_mean"]) == 2.0  # statistics: averaged, not stepped
    out2 = fedavgm_step(out, {**avg, "w": torch.tensor([2.0 - 0.2])}, {"w"}, opt, momentum=0.5)  # delta -0.2
    assert float(out2["w"]) == pytest.approx(2.0 + 2.0 * (0.5 * 0.5 - 0.2))
    assert opt.step == 2


def test_fedavgm_without_momentum_at_server_lr_1_is_fedavg() -> None:
    g = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    avg = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    out = fedavgm_step(g, avg, {"w", "b"}, AdamState(lr=1.0), momentum=0.0)
    assert all(torch.allclose(out[k], avg[k], atol=1e-6) for k in avg)


def test_strategy_names() -> None:
    assert check_strategy("FedBN") == "fedbn"
    from medclass.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown strategy"):
        check_strategy("scaffold")
