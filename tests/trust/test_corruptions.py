"""Corruptions: shapes, seeds, known values, severity ordering; ``evaluate --corruptions`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from medclass.trust.corruptions import CORRUPTIONS, SEVERITIES, corrupt, robustness


def _stack(shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(40, 215, shape[-1]).expand(*shape)
    return (ramp + torch.randint(-20, 20, shape, generator=g)).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("shape", [(3, 1, 32, 32), (2, 3, 28, 28), (2, 1, 4, 16, 16)])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_shape_dtype_seed_and_severity_order(name, shape):
    x = _stack(shape)
    outs = [corrupt(x, name, s, seed=1) for s in SEVERITIES]
    for y in outs:
        assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(outs[2], corrupt(x, name, 3, seed=1))
    change = [(y.float() - x.float()).abs().mean().item() for y in outs]
    assert change[0] > 0 and change[-1] > change[0]
    if name in ("gaussian_noise", "blur", "contrast", "brightness"):
        assert all(a < b for a, b in zip(change, change[1:], strict=False))


def test_known_values():
    flat = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)
    assert torch.equal(corrupt(flat, "contrast", 5), flat)  # nothing to reduce
    assert torch.equal(corrupt(flat, "blur", 3), flat)
    assert torch.equal(corrupt(flat, "pixelate", 5), flat)
    assert (corrupt(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "brightness", 1) == 26).all()  # 0.1 * 255 rounded
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(flat, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(flat, "blur", 6)


def test_robustness_table():
    x = _stack((4, 1, 16, 16))

    def score(images: torch.Tensor) -> dict[str, float]:
        return {"mean": images.float().mean().item()}

    out = robustness(score, x)
    assert out["clean"]["mean"] == pytest.approx(x.float().mean().item())
    assert set(out["corruptions"]) == set(CORRUPTIONS) and all(len(v) == 5 for v in out["corruptions"].values())
    assert out["corruptions"]["brightness"][4]["mean"] > out["corruptions"]["brightness"][0]["mean"]


def test_evaluate_with_corruptions(tmp_path, make_npz, train_cli, run_cli):
    data = make_npz(tmp_path / "a.npz", sizes=(40, 12, 24), size=12)
    train_cli(data, tmp_path / "run")
    res = run_cli("evaluate", "--checkpoint", tmp_path / "run", "--data", data, "--corruptions", "--n-bootstrap", "20")
    assert res.code == 0, res.err
    assert "robustness" in res.out and "gaussian_noise" in res.out
    metrics = json.loads((tmp_path / "run" / "eval-a" / "metrics.json").read_text())
    rob = metrics["robustness"]
    assert len(rob["corruptions"]["jpeg"]) == 5 and 0 <= rob["corruptions"]["jpeg"][0]["auc"] <= 1
    assert "Robustness" in (tmp_path / "run" / "eval-a" / "report.html").read_text()
