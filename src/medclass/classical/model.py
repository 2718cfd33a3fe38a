"""Classical baselines as medclass models: hand-crafted features, a linear SVM, Platt-scaled scores.

``classical/hog-svm``, ``classical/lbp-svm``, ``classical/sift-bovw-svm`` and
``classical/orb-bovw-svm``. Histogram features (LBP, bags of visual words) go through the Hellinger
map (square root), which makes a linear SVM behave like one with a histogram kernel; all features
are standardised. One-vs-rest linear SVMs (scikit-learn's ``LinearSVC``) give decision values,
and Platt scaling fitted on validation (a scale and an offset per output) turns them into logits, so
AUC, calibration, thresholds and conformal sets work as for any network.

Everything a model needs (vocabulary, scaler, SVM weights, Platt parameters) is a tensor buffer, so
the model is saved in ``model.safetensors`` like any other and nothing is pickled. It runs as a
``torch.nn.Module`` on normalised input (the features are computed in NumPy), so ``evaluate``,
``predict`` and occlusion explanations work unchanged; gradient-based explanations do not apply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.errors import ConfigError

KINDS = {"hog-svm": "hog", "lbp-svm": "lbp", "sift-bovw-svm": "sift", "orb-bovw-svm": "orb"}
_HISTOGRAMS = ("lbp", "sift", "orb")


def features_of(images: np.ndarray, kind: str, vocabulary: np.ndarray | None = None) -> np.ndarray:
    """``(N, F)`` feature vectors of grey ``uint8`` images ``(N, H, W)`` (Hellinger-mapped histograms)."""
    from medclass.classical import features as f

    if kind == "hog":
        return f.hog(images)
    if kind == "lbp":
        feats = f.lbp(images)
    else:
        if vocabulary is None or len(vocabulary) == 0:
            raise ConfigError(f"{kind}: a bag-of-visual-words model needs its vocabulary")
        feats = f.bovw_histograms(f.dense_descriptors(images, kind), vocabulary)
    return np.sqrt(feats)


def grey_uint8(x: torch.Tensor) -> np.ndarray:
    """Normalised model input ``(B, C, H, W)`` (mean 0.5, std 0.5) -> grey ``uint8`` ``(B, H, W)``."""
    u = ((x.detach().float() * 0.5 + 0.5) * 255).round().clamp(0, 255)
    if u.ndim != 4:
        raise ConfigError("classical models take 2D images, not volumes")
    return u.mean(1).round().to(torch.uint8).numpy()


class ClassicalModel(nn.Module):
    """Features, standardisation, linear SVM decision values, Platt scaling; see the module docstring.

    Args:
        kind: ``hog``, ``lbp``, ``sift`` or ``orb``.
        num_classes: Outputs (1 for binary).
        feature_dim: Length of the feature vector.
        vocab_size: Visual words (bag-of-words kinds; 0 otherwise).
        descriptor_dim: Length of a local descriptor (bag-of-words kinds).

    Shapes:
        ``(B, C, H, W)`` -> ``(B, num_classes)`` logits.
    """

    default_cam_layer = ""

    def __init__(
        self, *, kind: str, num_classes: int, feature_dim: int, vocab_size: int = 0, descriptor_dim: int = 0, **_: Any
    ) -> None:
        super().__init__()
        self.kind, self.num_classes, self.num_features = kind, num_classes, feature_dim
        self.register_buffer("vocabulary", torch.zeros(vocab_size, descriptor_dim))
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(feature_dim))
        self.register_buffer("coef", torch.zeros(num_classes, feature_dim))
        self.register_buffer("intercept", torch.zeros(num_classes))
        self.register_buffer("platt_a", torch.ones(num_classes))
        self.register_buffer("platt_b", torch.zeros(num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised feature vectors ``(B, F)``."""
        feats = features_of(grey_uint8(x), self.kind, self.vocabulary.numpy() if len(self.vocabulary) else None)
        return (torch.from_numpy(feats).float() - self.mean) / self.scale

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """SVM decision values, Platt-scaled to logits ``(B, K)`` (``pre_logits``: the decision values)."""
        decision = features @ self.coef.T + self.intercept
        return decision if pre_logits else decision * self.platt_a + self.platt_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """Blank SVM and Platt parameters for ``num_classes`` outputs (they are fitted, not trained)."""
        self.num_classes = num_classes
        self.coef = torch.zeros(num_classes, self.num_features)
        self.intercept = torch.zeros(num_classes)
        self.platt_a, self.platt_b = torch.ones(num_classes), torch.zeros(num_classes)


def build_classical(name: str, *, in_chans: int = 1, num_classes: int = 2, **kwargs: Any) -> ClassicalModel:
    """``classical/<kind>-svm`` -> an (unfitted) :class:`ClassicalModel`; sizes come from ``kwargs``."""
    key = name.split("/", 1)[1].lower()
    if key not in KINDS:
        raise ConfigError(f"unknown classical model '{name}' (use {', '.join('classical/' + k for k in KINDS)})")
    kwargs.setdefault("feature_dim", 1)
    return ClassicalModel(kind=KINDS[key], num_classes=num_classes, **kwargs)
