"""Task semantics: head width, logits -> probabilities, and the loss against naive references."""

from __future__ import annotations

import math

import pytest
import torch

from medclass.tasks import logits_to_probs, num_outputs, task_loss


def _bce(z: float, y: float) -> float:
    """-[y log s(z) + (1 - y) log(1 - s(z))], written out."""
    s = 1 / (1 + math.exp(-z))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


def _ce(row: list[float], y: int, weight: float = 1.0) -> float:
    logsum = math.log(sum(math.exp(v) for v in row))
    return -weight * (row[y] - logsum)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_num_outputs():
    assert num_outputs("binary", 2) == 1
    assert num_outputs("multiclass", 5) == 5
    assert num_outputs("ordinal", 5) == 5
    assert num_outputs("multilabel", 14) == 14


def test_logits_to_probs_shapes(gen):
    z = torch.randn(4, 1, generator=gen)
    p = logits_to_probs(z, "binary")
    assert p.shape == (4, 2) and torch.allclose(p.sum(1), torch.ones(4))
    assert torch.allclose(p[:, 1], torch.sigmoid(z[:, 0]))
    z = torch.randn(4, 5, generator=gen)
    for task in ("multiclass", "ordinal"):
        p = logits_to_probs(z, task)
        assert p.shape == (4, 5) and torch.allclose(p.sum(1), torch.ones(4))
    p = logits_to_probs(z, "multilabel")
    assert p.shape == (4, 5) and torch.allclose(p, torch.sigmoid(z))
    assert logits_to_probs(z.to(torch.bfloat16), "multiclass").dtype == torch.float32


def test_binary_loss_matches_reference(gen):
    z = torch.randn(6, 1, generator=gen)
    y = torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.float32)
    ref = sum(_bce(z[i, 0].item(), y[i].item()) for i in range(6)) / 6
    assert task_loss(z, y, "binary").item() == pytest.approx(ref, rel=1e-5)


def test_binary_loss_nan_masking_and_class_weights(gen):
    z = torch.randn(6, 1, generator=gen)
    y = torch.tensor([0, 1, math.nan, 0, 1, math.nan])
    w = torch.tensor([0.5, 3.0])  # [negative, positive]
    known = [0, 1, 3, 4]
    ref = sum(w[int(y[i])].item() * _bce(z[i, 0].item(), y[i].item()) for i in known) / len(known)
    assert task_loss(z, y, "binary", class_weights=w).item() == pytest.approx(ref, rel=1e-5)
    ref_plain = sum(_bce(z[i, 0].item(), y[i].item()) for i in known) / len(known)
    assert task_loss(z, y, "binary").item() == pytest.approx(ref_plain, rel=1e-5)


def test_multilabel_loss_nan_masking_and_pos_weights(gen):
    z = torch.randn(5, 3, generator=gen)
    y = torch.tensor([[0, 1, math.nan], [1, 1, 0], [math.nan, math.nan, 1], [0, 0, 0], [1, math.nan, 1]])
    pos_w = torch.tensor([2.0, 1.0, 4.0])
    cells = [(i, j) for i in range(5) for j in range(3) if not math.isnan(y[i, j].item())]
    ref = sum(_bce(z[i, j].item(), y[i, j].item()) for i, j in cells) / len(cells)
    assert task_loss(z, y, "multilabel").item() == pytest.approx(ref, rel=1e-5)
    ref_w = sum((pos_w[j].item() if y[i, j] == 1 else 1.0) * _bce(z[i, j].item(), y[i, j].item()) for i, j in cells)
    assert task_loss(z, y, "multilabel", class_weights=pos_w).item() == pytest.approx(ref_w / len(cells), rel=1e-5)
    # the same as torch's BCE over the known cells
    mask = ~torch.isnan(y)
    torch_ref = torch.nn.functional.binary_cross_entropy_with_logits(z[mask], y[mask])
    assert task_loss(z, y, "multilabel").item() == pytest.approx(torch_ref.item(), rel=1e-6)


def test_multilabel_loss_gradient_ignores_unknown_cells(gen):
    z = torch.randn(3, 2, generator=gen, requires_grad=True)
    y = torch.tensor([[1, math.nan], [0, 1], [math.nan, math.nan]])
    task_loss(z, y, "multilabel").backward()
    assert torch.all(z.grad[torch.isnan(y)] == 0) and torch.all(z.grad[~torch.isnan(y)] != 0)


def test_multiclass_loss_matches_reference(gen):
    z = torch.randn(5, 4, generator=gen)
    y = torch.tensor([0, 3, 1, 1, 2], dtype=torch.float32)
    ref = sum(_ce(z[i].tolist(), int(y[i])) for i in range(5)) / 5
    for task in ("multiclass", "ordinal"):
        assert task_loss(z, y, task).item() == pytest.approx(ref, rel=1e-5)


def test_multiclass_loss_nan_and_class_weights(gen):
    z = torch.randn(6, 3, generator=gen)
    y = torch.tensor([0, 2, math.nan, 1, 2, math.nan])
    w = torch.tensor([1.0, 2.0, 0.5])
    known = [0, 1, 3, 4]
    # torch's weighted mean: sum(w_y * ce) / sum(w_y) over the known rows
    num = sum(_ce(z[i].tolist(), int(y[i]), w[int(y[i])].item()) for i in known)
    den = sum(w[int(y[i])].item() for i in known)
    assert task_loss(z, y, "multiclass", class_weights=w).item() == pytest.approx(num / den, rel=1e-5)
    ref = sum(_ce(z[i].tolist(), int(y[i])) for i in known) / len(known)
    assert task_loss(z, y, "multiclass").item() == pytest.approx(ref, rel=1e-5)


def test_label_smoothing(gen):
    z = torch.randn(4, 3, generator=gen)
    y = torch.tensor([0, 1, 2, 1], dtype=torch.float32)
    eps = 0.1
    ref = 0.0
    for i in range(4):
        logp = torch.log_softmax(z[i], 0)
        target = torch.full((3,), eps / 3)
        target[int(y[i])] += 1 - eps
        ref += -(target * logp).sum().item()
    assert task_loss(z, y, "multiclass", label_smoothing=eps).item() == pytest.approx(ref / 4, rel=1e-5)
    zb = torch.randn(4, 1, generator=gen)
    yb = torch.tensor([0.0, 1.0, 1.0, 0.0])
    ref_b = sum(_bce(zb[i, 0].item(), yb[i].item() * (1 - eps) + 0.5 * eps) for i in range(4)) / 4
    assert task_loss(zb, yb, "binary", label_smoothing=eps).item() == pytest.approx(ref_b, rel=1e-5)


def test_soft_targets(gen):
    z = torch.randn(3, 4, generator=gen)
    soft = torch.softmax(torch.randn(3, 4, generator=gen), 1)
    ref = -(soft * torch.log_softmax(z, 1)).sum(1).mean()
    assert task_loss(z, soft, "multiclass").item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize(("task", "width"), [("binary", 1), ("multilabel", 3), ("multiclass", 3)])
def test_all_labels_unknown_gives_zero_with_gradient(task, width):
    z = torch.randn(4, width, requires_grad=True)
    y = torch.full((4, width) if task == "multilabel" else (4,), math.nan)
    loss = task_loss(z, y, task)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(z.grad == 0)
