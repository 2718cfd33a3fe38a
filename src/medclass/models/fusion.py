"""Images with clinical fields: one wrapper that joins any registered image model to an encoded tabular vector.

The tabular vector is what :class:`medclass.data.tabular.TabularSchema` makes of a row (standardised numbers,
one-hot categories and a missing indicator per field), ``(B, T)`` float32. The methods:

* ``concat`` (intermediate fusion): the image model's pooled features (``forward_head(pre_logits=True)``)
  beside an MLP embedding of the fields, then a linear head.
* ``film`` (feature-wise linear modulation, Perez et al. 2018; DAFT, Wolf et al. 2022, is a variant that
  also sees the image): the embedding predicts a per-channel scale ``1 + gamma`` and shift ``beta`` applied
  to the image feature map from ``forward_features`` *before* pooling (channels are axis 1 of a CNN's map,
  the last axis of a ViT's tokens); the image model's own pooling and head follow. The modulation starts
  as the identity (the predicting layer is zero-initialised), so training starts from the image model.
* ``late``: the image model's logits plus logits of an MLP on the fields, summed.
* ``tabular_only``: the MLP on the fields alone, images ignored (the baseline every fusion must beat).

**Modality dropout** (training only): with probability ``modality_dropout`` per sample, the sample's whole
tabular vector is replaced by the encoding of "every field missing" (values 0, indicators 1), so the model
learns to predict from the image alone too; a call without fields (``tabular=None``: explanations, the
ONNX graph, prediction without clinical data) then gets what training prepared it for. In ``eval()`` mode
nothing is dropped.

The wrapper honours the model contract: ``forward(images, tabular) == forward_head(forward_features(images,
tabular))``; ``forward_features`` gives the modulated feature map (``film``) or the fused vector (the others);
``default_cam_layer`` is the image model's, under ``image.``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medclass.models.registry import create_model

METHODS = ("concat", "film", "late", "tabular_only")


def modality_dropout(
    tabular: torch.Tensor, missing: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each row of ``tabular`` by ``missing`` with probability ``p``.

    Args:
        tabular: ``(B, T)`` encoded fields.
        missing: ``(T,)`` the encoding of a row with every field missing.
        p: Share of rows replaced.
        generator: Source of randomness (a CPU generator; the global one when ``None``).

    Returns:
        ``(B, T)``: the rows kept, or ``missing``.
    """
    if p <= 0:
        return tabular
    drop = torch.rand(tabular.shape[0], generator=generator) < p
    drop = drop.to(tabular.device).unsqueeze(1)
    return torch.where(drop, missing.to(tabular.dtype).expand_as(tabular), tabular)


def film(features: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``features * (1 + gamma) + beta`` per channel.

    Args:
        features: ``(B, C, *spatial)`` feature map, or ``(B, N, C)`` tokens.
        gamma: ``(B, C)`` scale offsets.
        beta: ``(B, C)`` shifts.
    """
    shape = (features.shape[0], 1, -1) if features.ndim == 3 else (*gamma.shape, *([1] * (features.ndim - 2)))
    return features * (1 + gamma.view(shape)) + beta.view(shape)


def tabular_mlp(tabular_dim: int, hidden: int, embed: int, drop_rate: float = 0.0) -> nn.Sequential:
    """``(B, T)`` -> ``(B, embed)``: two ReLU layers."""
    return nn.Sequential(
        nn.Linear(tabular_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity(),
        nn.Linear(hidden, embed),
        nn.ReLU(inplace=True),
    )


def feature_sizes(image_model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """``(channels of forward_features' map, size of the pooled pre-logits vector)``, from one probe pass.

    Args:
        image_model: Any model honouring the contract.
        input_shape: ``(C, H, W)`` or ``(C, D, H, W)``.
    """
    was_training = image_model.training
    image_model.eval()
    try:
        with torch.no_grad():
            features = image_model.forward_features(torch.zeros(2, *input_shape))
            pooled = image_model.forward_head(features, pre_logits=True)
    finally:
        image_model.train(was_training)
    channels = features.shape[-1] if features.ndim == 3 else features.shape[1]
    return int(channels), int(pooled.shape[1])


class FusionModel(nn.Module):
    """An image model and an encoded tabular vector joined by ``method`` (see the module docstring).

    Args:
        image_model: A registered model built with ``num_classes`` outputs (``late`` uses its logits, ``film`` its
            head; ``concat`` uses its pooled features); ``None`` for ``tabular_only``.
        tabular_dim: ``T``, the encoded vector's length.
        num_classes: Outputs.
        method: ``concat``, ``film``, ``late`` or ``tabular_only``.
        missing: ``(T,)`` the encoding of "every field missing" (default: zeros); used for ``tabular=None``
            and by modality dropout.
        modality_dropout: Training-time share of samples whose fields are all set missing.
        input_shape: ``(C, H, W)`` or ``(C, D, H, W)``: finds the image features' sizes with one probe pass
            (default: ``image_model.num_features`` for both).
        hidden: Width of the tabular MLP's hidden layer.
        embed: Size of the tabular embedding.
        drop_rate: Dropout inside the tabular MLP and before the ``concat``/``tabular_only`` head.

    Shapes:
        ``images (B, C, *spatial)``, ``tabular (B, T)`` or ``None`` -> ``(B, num_classes)`` logits.
    """

    def __init__(
        self,
        image_model: nn.Module | None,
        tabular_dim: int,
        num_classes: int,
        method: str = "concat",
        *,
        missing: torch.Tensor | Sequence[float] | None = None,
        modality_dropout: float = 0.2,
        input_shape: Sequence[int] | None = None,
        hidden: int = 64,
        embed: int = 32,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"fusion method '{method}' is not one of {', '.join(METHODS)}")
        if image_model is None and method != "tabular_only":
            raise ValueError(f"fusion method '{method}' needs an image model")
        if method in ("film", "late") and getattr(image_model, "num_classes", num_classes) != num_classes:
            raise ValueError(f"fusion method '{method}' uses the image model's head: give it {num_classes} outputs")
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.method, self.num_classes, self.tabular_dim = method, num_classes, tabular_dim
        self.modality_dropout = float(modality_dropout)
        self.generator: torch.Generator | None = None  # modality dropout's randomness (None: the global one)
        miss = torch.zeros(tabular_dim) if missing is None else torch.as_tensor(missing, dtype=torch.float32)
        self.register_buffer("missing", miss.reshape(tabular_dim).clone(), persistent=False)
        self.image = image_model if method != "tabular_only" else None
        self.tabular = tabular_mlp(tabular_dim, hidden, embed, drop_rate)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.default_cam_layer = f"image.{image_model.default_cam_layer}" if self.image is not None else ""
        if self.image is not None:
            self.spatial_dims = getattr(image_model, "spatial_dims", 2)
            if input_shape is not None:
                channels, pooled = feature_sizes(self.image, input_shape)
            else:
                channels = pooled = int(image_model.num_features)
        self.head: nn.Module
        if method == "concat":
            self.head = nn.Linear(pooled + embed, num_classes)
        elif method == "film":
            self.head = nn.Linear(embed, 2 * channels)  # predicts (gamma, beta); the image model's head classifies
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:  # late, tabular_only: the fields' own logits
            self.head = nn.Linear(embed, num_classes)
        self.num_features = embed + (pooled if method == "concat" else 0)

    def fields(self, tabular: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The ``(B, T)`` tabular input: "all missing" for ``None``; modality dropout applied in training mode."""
        if tabular is None:
            return self.missing.to(device).expand(batch, -1)
        if not torch.jit.is_tracing() and tabular.shape != (batch, self.tabular_dim):  # ONNX export: batch is dynamic
            raise ValueError(f"tabular input of shape {tuple(tabular.shape)}; expected ({batch}, {self.tabular_dim})")
        tabular = tabular.to(device=device, dtype=torch.float32)
        if self.training and self.modality_dropout > 0:
            tabular = modality_dropout(tabular, self.missing, self.modality_dropout, self.generator)
        return tabular

    def forward_features(self, images: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """``film``: the modulated feature map ``(B, C, *spatial')`` (tokens ``(B, N, C)`` for a ViT); otherwise
        the fused vector ``(B, num_features)`` (``late``: image and tabular logits side by side, ``(B, 2K)``)."""
        emb = self.tabular(self.fields(tabular, images.shape[0], images.device))
        if self.method == "tabular_only":
            return emb
        if self.method == "film":
            gamma, beta = self.head(emb).float().chunk(2, dim=1)
            return film(self.image.forward_features(images), gamma, beta)
        if self.method == "concat":
            pooled = self.image.forward_head(self.image.forward_features(images), pre_logits=True)
            return torch.cat([pooled, emb.to(pooled.dtype)], dim=1)
        image_logits = self.image(images)
        return torch.cat([image_logits, self.head(emb).to(image_logits.dtype)], dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Fused features -> logits ``(B, num_classes)`` (``pre_logits``: the vector the last layer sees)."""
        if self.method == "film":
            return self.image.forward_head(features, pre_logits=pre_logits)
        if self.method == "late":
            k = self.num_classes
            return features if pre_logits else features[:, :k] + features[:, k:]
        x = self.drop(features)
        return x if pre_logits else self.head(x)

    def forward(self, images: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, *spatial)`` images and ``(B, T)`` fields (``None``: all missing) -> ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(images, tabular))

    def get_classifier(self) -> nn.Module:
        """What trains with a frozen backbone (``model.freeze: backbone``): the tabular branch and the fusion
        layers; the image network (with its own head, for ``film`` and ``late``) is the backbone."""
        return nn.ModuleList([self.tabular, self.head])

    def reset_classifier(self, num_classes: int) -> None:
        """New output layers for ``num_classes`` outputs (the image model's too, where its head is used)."""
        self.num_classes = num_classes
        if self.method in ("film", "late"):
            self.image.reset_classifier(num_classes)
        if self.method != "film":
            self.head = nn.Linear(self.head.in_features, num_classes)


def build_fusion(arch: dict[str, Any]) -> FusionModel:
    """The fusion network of a checkpoint's ``architecture`` entry (its ``fusion`` block; see
    :func:`medclass.training.multimodal.fusion_entry`)."""
    spec = arch["fusion"]
    image = None
    if spec["method"] != "tabular_only":
        image = create_model(
            arch["name"],
            in_chans=arch["in_chans"],
            num_classes=arch["num_outputs"],
            spatial_dims=arch.get("spatial_dims"),
            **arch.get("kwargs", {}),
        )
        if arch.get("truncate"):
            from medclass.models.truncate import truncate_stages

            image = truncate_stages(image, int(arch["truncate"]), name=arch["name"])
    return FusionModel(
        image,
        int(spec["tabular_dim"]),
        int(arch["num_outputs"]),
        spec["method"],
        missing=spec.get("missing"),
        modality_dropout=float(spec.get("modality_dropout", 0.0)),
        input_shape=spec.get("input_shape"),
        drop_rate=float(arch.get("kwargs", {}).get("drop_rate", 0.0)),
    )
