"""Self-supervised methods around any registered encoder: one module per method, one ``loss`` call per batch.

Every method holds ``encoder``, a registered model built with no classifier (``num_classes=0``), whose
weights become the pretraining run's ``model.safetensors``: the state names are those of the same
architecture with a head, so ``train --init-from RUN`` loads all of it but the head.

* ``simclr``: two views, a projection MLP, NT-Xent (Chen et al. 2020).
* ``byol``: an online encoder, projector and predictor regress a momentum target's projection of the
  other view; no negatives (Grill et al. 2020). The target's momentum rises from ``momentum`` to 1 on a cosine.
* ``mim``: masked image modelling. Square (cubic) patches of the input are zeroed (the mean after
  normalisation); a one-layer decoder maps the encoder's feature map back to pixels, and the L1 error is
  taken on the hidden pixels only (SimMIM, Xie et al. 2022). It serves CNNs, the hybrid and ViTs alike:
  a ViT's tokens are laid back on their grid.
* ``mae``: the masked autoencoder for the ViTs and the hybrid, whose transformer sees only the visible
  tokens (:mod:`medclass.ssl.mae`).
* ``rotation``: which of four quarter turns an image shows (2D; Gidaris et al. 2018).
* ``slice_order``: which of six orders three slabs of a volume were put in (3D).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medclass.config import PretrainConfig
from medclass.errors import ConfigError
from medclass.ssl.losses import byol_loss, masked_l1, nt_xent
from medclass.ssl.pretext import SLAB_ORDERS, patch_mask, rotate_batch, shuffle_slabs

Views = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # e.g. medclass.transforms.Compose


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features ``(B, F)`` of an encoder for input ``(B, C, *spatial)``."""
    return encoder.forward_head(encoder.forward_features(x), pre_logits=True)


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    layers = [nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out)]
    return nn.Sequential(*layers)


class SSLMethod(nn.Module):
    """Base class: ``loss(x, generator, views)`` for a normalised batch; ``after_step(done)`` once per step."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features = int(encoder.num_features)

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, done: float) -> None:
        """Called after each optimiser step with the share of the schedule done (0..1)."""


class SimCLR(SSLMethod):
    """Two augmented views per image, a projection MLP and NT-Xent."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__(encoder)
        self.projector = _mlp(self.num_features, self.num_features, cfg.proj_dim)
        self.temperature = cfg.temperature

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        v1, v2 = views(x, generator), views(x, generator)
        z = self.projector(pooled(self.encoder, torch.cat([v1, v2])))
        return nt_xent(*z.chunk(2), temperature=self.temperature)


class BYOL(SSLMethod):
    """Online encoder + projector + predictor against a momentum (EMA) copy of encoder + projector."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__(encoder)
        hidden = max(2 * self.num_features, 256)
        self.projector = _mlp(self.num_features, hidden, cfg.proj_dim)
        self.predictor = _mlp(cfg.proj_dim, hidden, cfg.proj_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = cfg.momentum

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        v = torch.cat([views(x, generator), views(x, generator)])
        p1, p2 = self.predictor(self.projector(pooled(self.encoder, v))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(pooled(self.target_encoder, v)).chunk(2)
        return (byol_loss(p1, z2) + byol_loss(p2, z1)) / 2

    @torch.no_grad()
    def after_step(self, done: float) -> None:
        tau = 1 - (1 - self.base_momentum) * (math.cos(math.pi * min(done, 1.0)) + 1) / 2
        for online, target in ((self.encoder, self.target_encoder), (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters(), strict=True):
                pt.lerp_(po.detach(), 1 - tau)
            for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
                bt.copy_(bo)


def feature_grid(features: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """An encoder's features as a map ``(B, F, *grid)``: a map as it is, ViT tokens ``(B, N, F)`` on their grid.

    Raises:
        ConfigError: Features that are neither (e.g. capsules).
    """
    if features.ndim == 2 + spatial_dims:
        return features
    if features.ndim == 3 and spatial_dims == 2:
        b, n, d = features.shape
        g = math.isqrt(n)
        return features[:, n - g * g :].transpose(1, 2).reshape(b, d, g, g)  # leading class/register tokens dropped
    raise ConfigError(f"pretrain.method mim: the encoder's features {tuple(features.shape)} are not a feature map")


def unfold_pixels(pred: torch.Tensor, channels: int, scale: int) -> torch.Tensor:
    """``(B, C * s^d, *grid)`` -> ``(B, C, *(grid * s))``: each grid cell's values laid out as an ``s^d`` block."""
    b, grid = pred.shape[0], pred.shape[2:]
    d = len(grid)
    x = pred.reshape(b, channels, *([scale] * d), *grid)
    order = [0, 1] + [i for k in range(d) for i in (2 + d + k, 2 + k)]  # (B, C, g1, s, g2, s, ...)
    return x.permute(order).reshape(b, channels, *(g * scale for g in grid))


class MaskedImageModel(SSLMethod):
    """Hide patches, reconstruct them from the encoder's feature map with a linear decoder, L1 on hidden pixels."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig, sample_shape: tuple[int, ...]) -> None:
        super().__init__(encoder)
        self.channels, self.dims = sample_shape[0], len(sample_shape) - 1
        self.patch, self.ratio = cfg.mask_patch, cfg.mask_ratio
        if not 0 < self.ratio < 1:
            raise ConfigError(f"pretrain.mask_ratio: {self.ratio} is not between 0 and 1")
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            grid = feature_grid(encoder.forward_features(torch.zeros(1, *sample_shape)), self.dims)
        encoder.train(was)
        self.side = tuple(sample_shape[1:])
        self.scale = max(-(-s // g) for s, g in zip(self.side, grid.shape[2:], strict=True))
        conv = nn.Conv2d if self.dims == 2 else nn.Conv3d
        self.decoder = conv(grid.shape[1], self.channels * self.scale**self.dims, 1)

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        x = views(x, generator)
        mask = patch_mask(x.shape, self.patch, self.ratio, generator).to(x.device)
        grid = feature_grid(self.encoder.forward_features(x * (1 - mask)), self.dims)
        recon = unfold_pixels(self.decoder(grid), self.channels, self.scale)
        recon = recon[(..., *(slice(0, s) for s in self.side))]
        return masked_l1(recon, x, mask)


class RotationPrediction(SSLMethod):
    """Predict the quarter turn of each (augmented) image with a linear head: 4 classes."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__(encoder)
        self.head = nn.Linear(self.num_features, 4)

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        turned, k = rotate_batch(views(x, generator), generator)
        return F.cross_entropy(self.head(pooled(self.encoder, turned)).float(), k.to(x.device))


class SliceOrderPrediction(SSLMethod):
    """Predict the order of three shuffled slabs of each volume with a linear head: 6 classes."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__(encoder)
        self.head = nn.Linear(self.num_features, len(SLAB_ORDERS))

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: Views) -> torch.Tensor:
        shuffled, order = shuffle_slabs(views(x, generator), generator)
        return F.cross_entropy(self.head(pooled(self.encoder, shuffled)).float(), order.to(x.device))


def build_method(cfg: PretrainConfig, encoder: nn.Module, sample_shape: tuple[int, ...]) -> SSLMethod:
    """The method ``cfg.method`` around ``encoder`` for images of ``sample_shape`` ``(C, *spatial)``.

    Raises:
        ConfigError: A method that does not suit the data (rotation of volumes, slice order of 2D images).
    """
    dims = len(sample_shape) - 1
    if cfg.method == "rotation" and dims != 2:
        raise ConfigError("pretrain.method rotation is for 2D images; use slice_order, simclr, byol or mim for volumes")
    if cfg.method == "slice_order" and dims != 3:
        raise ConfigError("pretrain.method slice_order is for volumes; use rotation, simclr, byol or mim for 2D images")
    if not hasattr(encoder, "num_features"):
        raise ConfigError(f"pretrain: {type(encoder).__name__} has no feature size (num_features) to pretrain")
    if cfg.method == "simclr":
        return SimCLR(encoder, cfg)
    if cfg.method == "byol":
        return BYOL(encoder, cfg)
    if cfg.method == "mim":
        return MaskedImageModel(encoder, cfg, sample_shape)
    if cfg.method == "mae":
        from medclass.ssl.mae import MaskedAutoencoder

        return MaskedAutoencoder(encoder, cfg, sample_shape)  # type: ignore[return-value]  # same two calls
    if cfg.method == "rotation":
        return RotationPrediction(encoder)
    return SliceOrderPrediction(encoder)
