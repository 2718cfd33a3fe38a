"""Capsule networks: dynamic routing (Sabour et al. 2017) and self-attention routing (Mazzia et al. 2021).

A small convolutional stem turns the image into primary capsules (8-D vectors, several per
position); class capsules (16-D) are routed from them, and each class's score is its capsule's
length, in (0, 1). To fit the rest of medclass (cross-entropy, sigmoid heads, calibration), the
head returns ``logit(length)``: for binary and multi-label tasks ``sigmoid(logit) = length`` exactly.

* ``capsnet``: routing by agreement, three iterations (Sabour et al. 2017), on a lighter stem than
  the paper's 9x9 convolutions, which would cost seconds per batch on a CPU.
* ``capsnet_sa``: Efficient-CapsNet's self-attention routing, one pass: each primary capsule's
  weight is the softmax of its agreement with all the others' predictions (``u_i . sum_j u_j /
  sqrt(d)``, the row sums of the self-attention matrix, computed in linear time) plus a learnt prior.

The contract: ``forward_features`` gives the primary capsules' feature map ``(B, C, h, w)``,
``forward_head`` routes, ``reset_classifier`` makes new class capsules, and Grad-CAM uses the
primary-capsule convolution.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from medclass.models.registry import register_model
from medclass.models.smallcnn import ConvBNAct

_EPS = 1e-6


def squash(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``|s|^2 / (1 + |s|^2) * s / |s|``: keeps direction, maps length into [0, 1)."""
    sq = (s * s).sum(dim, keepdim=True)
    return sq / (1 + sq) * s / torch.sqrt(sq + _EPS)


class ClassCapsules(nn.Module):
    """Route ``(B, N, d_in)`` primary capsules to ``(B, K, d_out)`` class capsules.

    Args:
        num_in: Number of primary capsules N.
        d_in: Their dimension.
        num_classes: Class capsules K.
        d_out: Their dimension.
        routing: ``dynamic`` (``iterations`` rounds of agreement) or ``attention`` (one self-attention pass).
        iterations: Rounds of dynamic routing.
    """

    def __init__(
        self, num_in: int, d_in: int, num_classes: int, d_out: int = 16, routing: str = "dynamic", iterations: int = 3
    ) -> None:
        super().__init__()
        self.num_in, self.num_classes, self.d_out = num_in, num_classes, d_out
        self.routing, self.iterations = routing, iterations
        self.weight = nn.Parameter(torch.randn(num_in, num_classes, d_out, d_in) * 0.05)
        self.prior = nn.Parameter(torch.zeros(num_in, num_classes)) if routing == "attention" else None

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # Predictions of every primary capsule for every class capsule: (B, N, K, d_out).
        u_hat = torch.einsum("nkoi,bni->bnko", self.weight, u)
        if self.routing == "attention":
            agreement = (u_hat * u_hat.sum(1, keepdim=True)).sum(-1) / math.sqrt(self.d_out)  # (B, N, K)
            c = torch.softmax(agreement, dim=1) + self.prior
            return squash((c.unsqueeze(-1) * u_hat).sum(1))
        logits = torch.zeros(u_hat.shape[:3], device=u.device, dtype=u_hat.dtype)
        detached = u_hat.detach()
        for i in range(self.iterations):
            c = torch.softmax(logits, dim=2)  # each primary capsule shares itself among the classes
            last = i == self.iterations - 1
            v = squash((c.unsqueeze(-1) * (u_hat if last else detached)).sum(1))  # (B, K, d_out)
            if not last:
                logits = logits + (detached * v.unsqueeze(1)).sum(-1)
        return v


class CapsNet(nn.Module):
    """Convolutional stem, primary capsules, routed class capsules; see the module docstring.

    Args:
        in_chans: Input channels.
        num_classes: Outputs (one class capsule each).
        img_size: Input side (fixes the number of primary capsules).
        routing: ``dynamic`` or ``attention``.
        width: Channels of the stem.
        caps_per_position: Primary capsule types.
        drop_rate: Unused (capsules have no dropout); accepted for the common builder signature.

    Shapes:
        ``(B, in_chans, H, W)`` -> ``(B, num_classes)`` logits of the capsule lengths.
    """

    default_cam_layer = "features.primary"

    def __init__(
        self,
        *,
        in_chans: int = 1,
        num_classes: int = 2,
        img_size: int = 28,
        routing: str = "dynamic",
        width: int = 64,
        caps_per_position: int = 16,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.caps_dim, self.caps_types, self.routing = 8, caps_per_position, routing
        self.features = nn.Sequential()
        self.features.add_module(
            "stem", nn.Sequential(ConvBNAct(2, in_chans, width // 2), ConvBNAct(2, width // 2, width, 2))
        )
        self.features.add_module("primary", nn.Conv2d(width, caps_per_position * self.caps_dim, 3, stride=2, padding=1))
        side = math.ceil(math.ceil(img_size / 2) / 2)
        self.num_primary = side * side * caps_per_position
        self.num_features = caps_per_position * self.caps_dim
        self.num_classes = num_classes
        self.classes = ClassCapsules(self.num_primary, self.caps_dim, max(num_classes, 1), routing=routing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> primary capsule map ``(B, types * 8, h, w)``."""
        return self.features(x)

    def capsules(self, features: torch.Tensor) -> torch.Tensor:
        """Primary capsule map -> squashed primary capsules ``(B, N, 8)``."""
        b, _, h, w = features.shape
        u = features.view(b, self.caps_types, self.caps_dim, h, w).permute(0, 3, 4, 1, 2)
        return squash(u.reshape(b, -1, self.caps_dim))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Primary capsule map -> ``logit(length)`` of each class capsule ``(B, K)`` (or the capsules' lengths)."""
        v = self.classes(self.capsules(features))
        length = v.norm(dim=-1).clamp(_EPS, 1 - _EPS)
        return length if pre_logits else torch.log(length / (1 - length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classes

    def reset_classifier(self, num_classes: int) -> None:
        """New class capsules for ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.classes = ClassCapsules(self.num_primary, self.caps_dim, max(num_classes, 1), routing=self.routing)


def _capsnet(routing: str, *, in_chans: int = 1, num_classes: int = 2, img_size: int = 28, **kw) -> CapsNet:
    return CapsNet(in_chans=in_chans, num_classes=num_classes, img_size=img_size, routing=routing, **kw)


for _name, _routing, _desc in (
    ("capsnet", "dynamic", "Capsule network, dynamic routing (Sabour et al. 2017), light stem"),
    ("capsnet_sa", "attention", "Capsule network, self-attention routing (Efficient-CapsNet, Mazzia et al. 2021)"),
):
    register_model(_name, family="capsule", sizes=(28, 64), min_size=8, takes_img_size=True, description=_desc)(
        partial(_capsnet, _routing)
    )
