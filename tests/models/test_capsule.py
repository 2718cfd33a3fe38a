"""Capsule networks: squash, routing by agreement against a naive loop, lengths as probabilities."""

from __future__ import annotations

import torch

from medclass.models import create_model
from medclass.models.capsule import ClassCapsules, squash


def test_squash_keeps_direction_and_bounds_length():
    s = torch.tensor([[3.0, 4.0], [0.03, 0.04]])
    v = squash(s)
    np_len = v.norm(dim=-1)
    assert torch.allclose(np_len, torch.tensor([25 / 26, 0.0025 / 1.0025]), atol=1e-4)
    assert torch.allclose(v[0] / v[0].norm(), s[0] / 5)


def _naive_routing(u_hat: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sabour et al.'s Procedure 1, one sample at a time, with loops."""
    out = []
    for sample in u_hat:  # (N, K, D)
        n, k, _ = sample.shape
        b = torch.zeros(n, k)
        for r in range(iterations):
            c = torch.softmax(b, dim=1)
            v = torch.stack([squash(sum(c[i, j] * sample[i, j] for i in range(n))) for j in range(k)])
            if r < iterations - 1:
                for i in range(n):
                    for j in range(k):
                        b[i, j] += torch.dot(sample[i, j], v[j])
        out.append(v)
    return torch.stack(out)


def test_dynamic_routing_matches_the_procedure():
    torch.manual_seed(0)
    layer = ClassCapsules(num_in=6, d_in=4, num_classes=3, d_out=5, routing="dynamic", iterations=3)
    u = squash(torch.randn(2, 6, 4))
    u_hat = torch.einsum("nkoi,bni->bnko", layer.weight, u)
    with torch.no_grad():
        assert torch.allclose(layer(u), _naive_routing(u_hat, 3), atol=1e-5)


def test_attention_routing_weights_by_agreement():
    torch.manual_seed(0)
    layer = ClassCapsules(num_in=5, d_in=4, num_classes=2, d_out=3, routing="attention")
    u = squash(torch.randn(1, 5, 4))
    u_hat = torch.einsum("nkoi,bni->bnko", layer.weight, u)[0]  # (N, K, D)
    expected = []
    for j in range(2):
        a = u_hat[:, j] @ u_hat[:, j].T / 3**0.5  # self-attention matrix of the predictions
        c = torch.softmax(a.sum(1), dim=0)
        expected.append(squash((c[:, None] * u_hat[:, j]).sum(0)))
    with torch.no_grad():
        assert torch.allclose(layer(u)[0], torch.stack(expected), atol=1e-5)


def test_binary_logit_is_the_capsule_length():
    torch.manual_seed(0)
    model = create_model("capsnet_sa", in_chans=1, num_classes=1, img_size=28).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        lengths = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(torch.sigmoid(model(x)), lengths, atol=1e-5)
        assert ((lengths > 0) & (lengths < 1)).all()
