"""DP-SGD for federated clients: accounting against Opacus, noise calibration, per-sample clipping, BN swap, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from medclass.data.dataset import Split
from medclass.errors import ConfigError
from medclass.federated.privacy import (
    PrivacyConfig,
    PrivateTrainer,
    calibrate_noise,
    epsilon_of,
    federation_steps,
    load_accountant_json,
    make_private_compatible,
    poisson_batches,
    private_optimizer,
    round_lr,
    set_lr,
)
from medclass.inference import to_input
from medclass.models import create_model
from medclass.tasks import task_loss

PREP = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}


def tiny_model(seed: int = 0) -> nn.Module:
    """Conv, GroupNorm, ReLU, pooled linear head: ``(B, 1, 6, 6)`` -> ``(B, 1)``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )


def tiny_split(n: int, seed: int = 0) -> Split:
    """``n`` random 6x6 uint8 images whose label is "brighter than average"."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 6, 6), dtype=np.uint8)
    labels = (images.reshape(n, -1).mean(1) > 127.5).astype(np.float32)
    return Split(torch.from_numpy(images), labels)


def trainer_for(split: Split, total_steps: int, *, state: dict | None = None, seed: int = 0, **cfg) -> PrivateTrainer:
    model = tiny_model()
    defaults = {"target_epsilon": 2.0, "batch_size": 16, "physical_batch_size": 8, "lr": 0.5, "seed": seed}
    config = PrivacyConfig(**{**defaults, **cfg})
    return PrivateTrainer(
        model,
        private_optimizer(model, config),
        num_samples=len(split),
        total_steps=total_steps,
        config=config,
        state=state,
    )


def opacus_epsilon(sigma: float, rate: float, steps: int, delta: float) -> float:
    """Opacus's own RDP accountant, stepped once per DP-SGD step."""
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=rate)
    return accountant.get_epsilon(delta=delta)


def test_epsilon_reported_equals_opacus_rdp_accountant():
    split = tiny_split(64)
    trainer = trainer_for(split, total_steps=federation_steps(64, 16, rounds=3))
    assert trainer.sample_rate == 0.25
    spent = [trainer.train(split, task="binary", prep=PREP, epochs=1) for _ in range(3)]
    assert trainer.steps_taken == 12
    assert spent[0] < spent[1] < spent[2]  # each round adds to the same client's budget
    for rounds_done, eps in enumerate(spent, start=1):
        expected = opacus_epsilon(trainer.noise_multiplier, 0.25, 4 * rounds_done, 1e-5)
        assert eps == pytest.approx(expected, rel=1e-9)
    assert spent[-1] <= 2.0 and spent[-1] == pytest.approx(2.0, abs=0.02)  # the whole budget, used at the end


@pytest.mark.parametrize(("target", "rate", "steps"), [(8.0, 0.27, 80), (1.0, 0.01, 1000)])
def test_noise_calibration_meets_target_epsilon(target, rate, steps):
    config = PrivacyConfig(target_epsilon=target, delta=1e-5)
    sigma = calibrate_noise(config, rate, steps)
    eps = opacus_epsilon(sigma, rate, steps, 1e-5)
    assert target - 0.02 <= eps <= target
    assert opacus_epsilon(sigma * 0.98, rate, steps, 1e-5) > target  # less noise would overspend
    assert epsilon_of([(sigma, rate, steps)], 1e-5) == pytest.approx(eps, rel=1e-9)


def test_per_sample_clipping_matches_a_naive_per_sample_loop():
    split = tiny_split(24, seed=1)
    clip, lr = 0.05, 1.0
    # batch_size >= rows: sample rate 1, every row in every step; physical chunks of 8 rows
    trainer = trainer_for(split, total_steps=1, batch_size=32, physical_batch_size=8, max_grad_norm=clip)
    trainer.optimizer.noise_multiplier = 0.0  # isolate clipping from noise
    for group in trainer.optimizer.param_groups:
        group["lr"], group["momentum"] = lr, 0.0
    reference = tiny_model()
    before = [p.detach().clone() for p in reference.parameters()]
    x, y = to_input(split.images, PREP), torch.as_tensor(split.labels)
    clipped_sum = [torch.zeros_like(p) for p in reference.parameters()]
    norms = []
    for i in range(len(split)):  # naive: one backward per row
        reference.zero_grad()
        task_loss(reference(x[i : i + 1]), y[i : i + 1], "binary").backward()
        grads = [p.grad.detach().clone() for p in reference.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        clipped_sum = [s + factor * g for s, g in zip(clipped_sum, grads)]
    assert min(norms) > clip  # clipping is active on every row
    trainer.train(split, task="binary", prep=PREP, steps=1)
    after = list(trainer.module.parameters())
    for b, a, s in zip(before, after, clipped_sum):
        torch.testing.assert_close(a.detach(), b - lr * s / len(split), rtol=1e-4, atol=1e-6)
    update = torch.sqrt(sum(((a.detach() - b) ** 2).sum() for a, b in zip(after, before)))
    assert float(update) <= lr * clip + 1e-6  # mean of clipped gradients: at most the clip norm


def test_batchnorm_is_replaced_by_groupnorm_keeping_affine_parameters():
    for name in ("smallcnn", "resnet18_28"):
        model = create_model(name, in_chans=1, num_classes=1)
        bn_weights = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        fixed = make_private_compatible(model, groups=8)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fixed.modules())
        gns = [m for m in fixed.modules() if isinstance(m, nn.GroupNorm)]
        assert len(gns) == len(bn_weights)
        assert all(m.num_groups == 8 for m in gns)  # every width of these models is a multiple of 8
        for gn, w in zip(gns, bn_weights):
            torch.testing.assert_close(gn.weight.detach(), w)  # zero-initialised residual norms stay zero
        assert not any(getattr(m, "inplace", False) for m in fixed.modules())
        fixed.eval()
        assert fixed(torch.zeros(2, 1, 28, 28)).shape == (2, 1)


def test_accountant_json_round_trip_gives_the_same_epsilon_and_continues():
    split = tiny_split(64)
    steps = federation_steps(64, 16, rounds=3)
    first = trainer_for(split, total_steps=steps)
    first.train(split, task="binary", prep=PREP, epochs=1)
    text = first.accountant_json()
    state = load_accountant_json(text)
    assert json.loads(text)["history"] == [[first.noise_multiplier, 0.25, 4]]
    restarted = trainer_for(split, total_steps=steps, state=state)
    assert restarted.epsilon == first.epsilon == state["epsilon"]
    assert restarted.noise_multiplier == first.noise_multiplier
    eps = restarted.train(split, task="binary", prep=PREP, epochs=2)
    assert eps == pytest.approx(opacus_epsilon(first.noise_multiplier, 0.25, 12, 1e-5), rel=1e-9)
    with pytest.raises(ConfigError, match="privacy budget spent"):
        restarted.train(split, task="binary", prep=PREP, epochs=1)
    with pytest.raises(ConfigError, match="total_steps"):
        trainer_for(split, total_steps=steps + 4, state=state)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_accountant_json("not json")


def test_empty_poisson_draws_still_count_and_add_noise():
    draws = [len(b) for b in poisson_batches(200, 1 / 200, 40, torch.Generator().manual_seed(0))]
    assert 0 in draws and max(draws) > 0
    split = tiny_split(200)
    trainer = trainer_for(split, total_steps=40, batch_size=1)
    before = [p.detach().clone() for p in trainer.module.parameters()]
    trainer.train(split, task="binary", prep=PREP, steps=40)
    assert trainer.steps_taken == 40
    assert all(not torch.equal(b, a) for b, a in zip(before, trainer.module.parameters()))


def test_config_rejects_impossible_settings():
    with pytest.raises(ConfigError, match="target_epsilon"):
        PrivacyConfig(target_epsilon=0)
    with pytest.raises(ConfigError, match="delta"):
        PrivacyConfig(delta=1.0)


def test_round_lr_is_one_cosine_and_reaches_the_dp_optimizer():
    cfg = PrivacyConfig(lr=2.0)
    assert [round_lr(cfg, r, 4) for r in range(4)] == pytest.approx([2.0, 1.0 + 2**-0.5, 1.0, 1.0 - 2**-0.5])
    split = tiny_split(16)
    trainer = trainer_for(split, total_steps=1)
    set_lr(trainer.optimizer, 0.125)
    assert [g["lr"] for g in trainer.optimizer.original_optimizer.param_groups] == [0.125]
