"""What each clinical field adds to a prediction, beside the image's heat map.

Two views, both model-agnostic and computed through :class:`~medclass.predict.Predictor`:

* per image, :func:`field_contributions`: the change in the explained class's calibrated probability when one
  field is withheld (set missing, as at training time under modality dropout), holding the others;
* per data set, :func:`permutation_importance`: the drop in macro AUC when one field's values are shuffled across
  the rows (Breiman 2001), averaged over a few shuffles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def _rows(tabular: Any, fields: Sequence[str], n: int) -> list[dict[str, Any]]:
    """Clinical fields as ``n`` dicts, from a list of dicts, a mapping field -> ``n`` values, or ``None``."""
    if tabular is None:
        return [{} for _ in range(n)]
    if isinstance(tabular, Mapping):
        return [{f: tabular[f][i] for f in fields if f in tabular} for i in range(n)]
    return [dict(row) for row in tabular]


def field_contributions(predictor: Any, x: torch.Tensor, tabular: Any, targets: np.ndarray) -> np.ndarray:
    """Per image and field, P(target | all fields) - P(target | that field missing).

    Args:
        predictor: A :class:`~medclass.predict.Predictor` of a model trained with clinical fields.
        x: Its prepared ``uint8`` stack ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        tabular: The images' fields (a list of ``N`` dicts or a mapping field -> ``N`` values).
        targets: ``(N,)`` the class explained per image.

    Returns:
        ``(N, F)`` contributions, ``F = len(predictor.clinical_fields)``, in that order; positive: the field's
        value raised the target's probability. A field that is missing already contributes 0.
    """
    fields = list(predictor.clinical_fields)
    rows = _rows(tabular, fields, len(x))
    pick = np.arange(len(x)), np.asarray(targets, dtype=np.int64)
    full = predictor.probs(x, tabular=rows)[pick]
    out = np.zeros((len(x), len(fields)))
    for j, field in enumerate(fields):
        withheld = [{k: v for k, v in row.items() if k != field} for row in rows]
        out[:, j] = full - predictor.probs(x, tabular=withheld)[pick]
    return out


def permutation_importance(
    predictor: Any, x: torch.Tensor, tabular: Any, labels: np.ndarray, *, repeats: int = 3, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Drop in macro AUC per field when its values are shuffled across rows.

    Args:
        predictor: A :class:`~medclass.predict.Predictor` of a model trained with clinical fields.
        x: Its prepared ``uint8`` stack ``(N, ...)``.
        tabular: The rows' fields (a list of ``N`` dicts or a mapping field -> ``N`` values).
        labels: ``(N,)`` class indices (NaN unknown) or ``(N, L)`` multi-label 0/1.
        repeats: Shuffles per field.
        seed: Seed of the shuffles.

    Returns:
        ``{field: {"auc_drop": mean, "sd": sd over the shuffles}}`` and ``"auc"``: the unshuffled macro AUC under
        the key ``"_all"``.
    """
    from medclass.metrics.report import evaluate_predictions

    def auc(rows: list[dict[str, Any]]) -> float:
        probs = predictor.probs(x, tabular=rows)
        names = predictor.label_names
        return float(evaluate_predictions(labels, probs, task=predictor.task, label_names=names, n_bootstrap=0)["auc"])

    fields = list(predictor.clinical_fields)
    rows = _rows(tabular, fields, len(x))
    base = auc(rows)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {"_all": {"auc": base}}
    for field in fields:
        drops = []
        for _ in range(repeats):
            order = rng.permutation(len(rows))
            shuffled = [{**row, field: rows[k].get(field)} for row, k in zip(rows, order, strict=True)]
            drops.append(base - auc(shuffled))
        out[field] = {"auc_drop": float(np.mean(drops)), "sd": float(np.std(drops))}
    return out


def with_fields(model: Any, tabular: Any) -> Any:
    """``model`` with its clinical fields fixed, as a one-input network for the explanation methods.

    Args:
        model: A fusion model (``forward(images, tabular)``) with a ``default_cam_layer``.
        tabular: ``(1, T)`` encoded fields, used for every image of a call (Grad-CAM's batch, ScoreCAM's masks).

    Returns:
        A module whose ``forward(images (B, C, ...))`` gives ``model(images, tabular)`` logits ``(B, K)``.
    """
    from torch import nn

    from medclass.inference import model_device

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.default_cam_layer = f"model.{model.default_cam_layer}"
            self.register_buffer("tabular", tabular.float().to(model_device(model)), persistent=False)

        def forward(self, images: Any) -> Any:
            return self.model(images, self.tabular.expand(images.shape[0], -1))

    return Fixed().eval()
