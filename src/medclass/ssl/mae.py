"""Masked autoencoder (He et al. 2022) for the encoders that end in transformer blocks: the ViTs and the hybrid.

The image is cut into the patches that become the encoder's tokens; a share ``mask_ratio`` of them is hidden
per image. The encoder's transformer blocks see only the visible tokens (which is what makes MAE cheap); a small
decoder gets the encoded visible tokens back in place, a learnt mask token in every hidden place, and predicts the
pixels of each patch. The loss is the mean squared error on the hidden patches, each normalised by its own mean
and variance. For the hybrid, whose convolutional stages come before its tokens, the hidden patches are zeroed in
the input first, so their pixels reach the visible tokens only through the convolutions' borders.

Only ``encoder`` is kept by the pretraining run; the decoder is discarded.
"""

from __future__ import annotations

import torch
from torch import nn

from medclass.config import PretrainConfig
from medclass.errors import ConfigError
from medclass.ssl.losses import masked_patch_mse


def _is_vit(encoder: nn.Module) -> bool:
    return all(hasattr(encoder, k) for k in ("patch_embed", "blocks", "pos_embed", "num_prefix_tokens"))


def _is_hybrid(encoder: nn.Module) -> bool:
    features = getattr(encoder, "features", None)
    return features is not None and hasattr(getattr(features, "transformer", None), "blocks")


class _Tokens:
    """An encoder's two halves for MAE: ``tokens(x) -> (B, N, D)`` and ``encode(visible (B, n, D)) -> (B, n, D)``."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.vit = _is_vit(encoder)
        if not (self.vit or _is_hybrid(encoder)):
            raise ConfigError(
                f"pretrain.method mae needs a ViT (vit_tiny, vit_small) or hybrid_cnn_vit; {type(encoder).__name__} "
                "has no transformer tokens: use mim (masked image modelling) for CNNs"
            )
        if self.vit and getattr(encoder, "dynamic_img_size", False):
            raise ConfigError("pretrain.method mae: ViTs with a dynamic image size are not supported")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> patch tokens with their position encoding ``(B, N, D)``."""
        enc = self.encoder
        if self.vit:
            t = enc.patch_embed(x)
            if enc.pos_embed is not None:
                t = t + (enc.pos_embed if enc.no_embed_class else enc.pos_embed[:, enc.num_prefix_tokens :])
            return t
        f = enc.features
        m = f.stage2(f.stage1(f.stem(x)))
        m = m + f.transformer.pos(m)
        return m.flatten(2).transpose(1, 2)

    def encode(self, visible: torch.Tensor) -> torch.Tensor:
        """Visible tokens ``(B, n, D)`` through the transformer blocks (with the ViT's class token) -> ``(B, n, D)``."""
        enc = self.encoder
        if not self.vit:
            mixer = enc.features.transformer
            return mixer.norm(mixer.blocks(visible))
        prefix = [t for t in (enc.cls_token, getattr(enc, "reg_token", None)) if t is not None]
        lead = torch.cat([t.expand(len(visible), -1, -1) for t in prefix], 1) if prefix else visible[:, :0]
        if enc.pos_embed is not None and not enc.no_embed_class and lead.shape[1]:
            lead = lead + enc.pos_embed[:, : lead.shape[1]]
        z = enc.norm(enc.blocks(enc.norm_pre(torch.cat([lead, visible], 1))))
        return z[:, lead.shape[1] :]


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)(W/p), C p p)``, patches in row-major order of the token grid."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


class MaskedAutoencoder(nn.Module):
    """MAE around a ViT or hybrid ``encoder`` for 2D images of ``sample_shape`` ``(C, H, W)``.

    Args:
        encoder: The registered model, built without a classifier.
        cfg: ``mask_ratio`` (share of patches hidden; MAE uses 0.75) is read from it.
        sample_shape: ``(C, H, W)``.
        decoder_dim: Width of the decoder's tokens.
        decoder_depth: Transformer blocks in the decoder.
    """

    def __init__(
        self,
        encoder: nn.Module,
        cfg: PretrainConfig,
        sample_shape: tuple[int, ...],
        decoder_dim: int = 64,
        decoder_depth: int = 1,
    ) -> None:
        super().__init__()
        if len(sample_shape) != 3:
            raise ConfigError("pretrain.method mae is for 2D images; use mim or slice_order for volumes")
        self.encoder = encoder
        self.num_features = int(encoder.num_features)
        self.path = _Tokens(encoder)
        self.ratio = cfg.mask_ratio
        if not 0 < self.ratio < 1:
            raise ConfigError(f"pretrain.mask_ratio: {self.ratio} is not between 0 and 1")
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            n, dim = self.path.tokens(torch.zeros(1, *sample_shape)).shape[1:]
        encoder.train(was)
        c, h, w = sample_shape
        side = int(round(n**0.5))
        if side * side != n or h % side or w % side or h != w:
            raise ConfigError(f"pretrain.method mae: {n} tokens do not tile a {h}x{w} image in square patches")
        self.patch, self.channels = h // side, c
        self.embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos = nn.Parameter(torch.randn(1, n, decoder_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            decoder_dim, 4, 2 * decoder_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, c * self.patch * self.patch)

    def after_step(self, done: float) -> None:
        """Nothing to update between steps."""

    def hide(self, b: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keep (B, n_visible) token indices, mask (B, N) with 1 = hidden)``: ``round(ratio * N)`` hidden each."""
        hidden = min(n - 1, max(1, round(self.ratio * n)))
        order = torch.rand(b, n, generator=generator).argsort(1)
        keep = order[:, : n - hidden].sort(1).values
        mask = torch.ones(b, n)
        mask.scatter_(1, keep, 0.0)
        return keep, mask

    def loss(self, x: torch.Tensor, generator: torch.Generator, views: object) -> torch.Tensor:
        """One batch ``(B, C, H, W)`` (normalised): augment, hide, encode the visible tokens, reconstruct."""
        x = views(x, generator)  # type: ignore[operator]
        b = x.shape[0]
        side = x.shape[-1] // self.patch
        keep, mask = self.hide(b, side * side, generator)
        keep, mask = keep.to(x.device), mask.to(x.device)
        pixel_mask = mask.reshape(b, 1, side, side).repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)
        tokens = self.path.tokens(x * (1 - pixel_mask))
        index = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        encoded = self.embed(self.path.encode(tokens.gather(1, index)))
        full = self.mask_token.expand(b, side * side, -1).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, full.shape[-1]), encoded)
        pred = self.pred(self.norm(self.decoder(full + self.pos)))
        return masked_patch_mse(pred, patchify(x, self.patch), mask)
