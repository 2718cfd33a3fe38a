"""A Grad-CAM gallery for the report: the most confident true/false positives and negatives of a split.

Binary tasks give four cells (TP, FP, TN, FN of the positive class, the checkpoint's
``positive_index``, at the operating threshold on its probability); multi-class tasks give
"right" and "wrong" (the most confident of each). Each entry is a small PNG overlay (base64) of
the model's decision, so a reader sees what the model looked at when it was right and when it
was wrong. Volumes show their middle slice. Models without a CAM layer get no gallery.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.errors import ModelError
from medclass.metrics.positive import binary_decision, binary_score, positive_index


def _cells(
    labels: np.ndarray, probs: np.ndarray, task: str, threshold: Any, positive: int = 1
) -> dict[str, np.ndarray]:
    """Row indices of each gallery cell, most confident first (binary: ``positive`` is the positive class)."""
    known = ~np.isnan(labels)
    y = np.where(known, labels, -1).astype(int)
    if task == "binary":
        t = 0.5 if threshold is None else float(threshold)
        pred = binary_decision(probs, t, positive)
        conf = np.abs(binary_score(probs, positive) - t)
        negative = 1 - positive
        masks = {
            "true positive": (pred == positive) & (y == positive),
            "false positive": (pred == positive) & (y == negative),
            "true negative": (pred == negative) & (y == negative),
            "false negative": (pred == negative) & (y == positive),
        }
    else:
        pred, conf = probs.argmax(1), probs.max(1)
        masks = {"right": known & (pred == y), "wrong": known & (pred != y)}
    return {name: np.flatnonzero(m)[np.argsort(-conf[m], kind="stable")] for name, m in masks.items()}


def _png(picture: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def gallery(
    model: nn.Module,
    meta: dict[str, Any],
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    per_cell: int = 4,
    method: str = "gradcam",
) -> dict[str, list[dict[str, Any]]]:
    """``{cell: [{"png": base64, "prob": float, "label": str}]}`` for the report (empty for multi-label).

    Args:
        model: The network.
        meta: Its ``model.json`` content (task, preprocessing, labels, threshold).
        images: The split's ``uint8`` ``(N, C, ...)`` images.
        labels: ``(N,)`` labels (NaN = unknown).
        probs: ``(N, K)`` calibrated probabilities.
        per_cell: Images per cell.
        method: Saliency method.
    """
    from medclass.explain.methods import default_targets, saliency
    from medclass.explain.output import overlay
    from medclass.inference import to_input

    task = meta["task"]
    if task == "multilabel" or len(images) == 0:
        return {}
    pos = positive_index(meta)
    found = _cells(np.asarray(labels, dtype=float), probs, task, meta.get("threshold"), pos)
    cells = {k: v[:per_cell] for k, v in found.items()}
    rows = np.concatenate([v for v in cells.values()]).astype(int)
    if rows.size == 0:
        return {}
    targets = default_targets(probs[rows], task, meta.get("threshold"), positive_index=pos)
    try:
        maps = saliency(model, task, to_input(images[rows], meta["preprocessing"]), targets, method)
    except ModelError:
        return {}
    names = meta["label_names"]
    out: dict[str, list[dict[str, Any]]] = {}
    i = 0
    for cell, idx in cells.items():
        out[cell] = []
        for row in idx:
            image, heat = images[row].numpy(), maps[i]
            if heat.ndim == 3:  # a volume: its middle slice
                mid = heat.shape[0] // 2
                image, heat = image[:, mid], heat[mid]
            out[cell].append(
                {
                    "png": _png(overlay(image, heat)),
                    "prob": float(probs[row, int(targets[i])]),
                    "label": names[int(labels[row])] if not np.isnan(labels[row]) else "?",
                }
            )
            i += 1
    return out
