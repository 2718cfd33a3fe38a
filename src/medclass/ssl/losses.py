"""Self-supervised losses, each a pure function of tensors.

References: SimCLR's NT-Xent (Chen et al. 2020), BYOL's normalised regression (Grill et al. 2020) and
SimMIM's masked L1 reconstruction (Xie et al. 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy over ``2B`` embeddings (SimCLR).

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are two views of one image (the positive pair); the
    other ``2B - 2`` embeddings are its negatives.

    Args:
        z1: ``(B, D)`` projections of the first views.
        z2: ``(B, D)`` projections of the second views.
        temperature: Softmax temperature.

    Returns:
        Scalar: the mean over all ``2B`` anchors of ``-log softmax(sim / t)[positive]``.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # an embedding is not its own negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss ``2 - 2 cos(p, z)``, averaged over the batch.

    Args:
        prediction: ``(B, D)`` the online network's predictions.
        target: ``(B, D)`` the target network's projections of the other view (no gradient flows into them).

    Returns:
        Scalar in [0, 4].
    """
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.detach().float(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


def masked_l1(reconstruction: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels only.

    Args:
        reconstruction: ``(B, C, *spatial)`` predicted pixels.
        image: ``(B, C, *spatial)`` the unmasked input.
        mask: ``(B, 1, *spatial)`` 1 where the input was hidden, 0 elsewhere.

    Returns:
        Scalar: ``sum(|r - x| * m) / (sum(m) * C)``; 0 when nothing is masked.
    """
    err = (reconstruction.float() - image.float()).abs() * mask
    return err.sum() / (mask.sum() * image.shape[1]).clamp_min(1.0)


def masked_patch_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAE's loss: mean squared error on hidden patches, each target patch normalised to mean 0 and variance 1.

    Args:
        prediction: ``(B, N, P)`` predicted pixels of every patch (``P`` = channels x pixels per patch).
        target: ``(B, N, P)`` the image's patches.
        mask: ``(B, N)`` 1 for a hidden patch, 0 for a visible one.

    Returns:
        Scalar: the mean over hidden patches of ``mean_p((pred - (t - mean(t)) / sqrt(var(t) + 1e-6))^2)``.
    """
    t = target.float()
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
    per_patch = (prediction.float() - t).pow(2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
