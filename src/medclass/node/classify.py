"""Classify one received series with a :class:`~medclass.predict.Predictor`, and draw its heat map.

* A 2D model classifies every instance of the series (a multi-frame instance as the checkpoint reads files:
  its middle frame unless the run chose another); the series' result is the image with the highest urgency,
  the one a reader should see first.
* A 3D model classifies the series as one volume: single-frame slices assembled by
  :func:`medclass.io.read_series` (ordered by position), or one multi-frame instance.

The heat map is Grad-CAM of the decided class on that image (a volume shows its middle slice), as the REST
service draws it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import DataError
from medclass.node.dicom_results import SeriesResult

LOG = logging.getLogger("medclass.node")


def model_info(predictor: Any) -> dict[str, Any]:
    """Name, medclass version, training data (name and hash only) and intended use, for the SR."""
    from medclass import __version__

    meta = predictor.meta
    data = meta.get("dataset")
    training = {k: data[k] for k in ("name", "md5", "sha256") if isinstance(data, dict) and data.get(k)}
    return {
        "name": meta.get("architecture", {}).get("name", "model"),
        "version": __version__,
        "training_data": training,
        "intended_use": "Decision support for trained readers on images like the training data; not a diagnosis. "
        "Cases flagged for referral need a radiologist's read.",
    }


def _stack(predictor: Any, files: Sequence[Path]) -> tuple[Any, list[int]]:
    """The model's ``uint8`` stack for a series and, per image, the index of the file it came from."""
    import torch

    if len(predictor.input_shape) == 4:  # a 3D model: the series is one volume
        from medclass.io import read, read_series, to_uint8_image

        if len(files) == 1:
            data = read(files[0], window=predictor.prep.get("decode", {}).get("window"))
        else:
            data = read_series(files, window=predictor.prep.get("decode", {}).get("window"))
        volume = to_uint8_image(data, frame=None)
        if volume.ndim < 3:
            raise DataError("a single 2D image cannot feed a 3D model")
        ordered = [Path(f) for f in data.meta.get("files") or [files[0]]]
        middle = ordered[len(ordered) // 2]  # the heat map shows the middle slice: the SC references its file
        owner = next((i for i, f in enumerate(files) if Path(f) == middle), 0)
        return predictor.prepare(volume[None] if volume.ndim == 3 else volume, where="series"), [owner]
    parts, owners = [], []
    for i, f in enumerate(files):
        x, _ = predictor.load_inputs([f])
        parts.append(x)
        owners.extend([i] * int(x.shape[0]))
    return torch.cat(parts), owners


def classify_series(predictor: Any, files: Sequence[Path], *, heatmap: bool = True) -> tuple[SeriesResult, Any]:
    """The series' result and its heat-map overlay (``(H, W, 3)`` ``uint8``, or ``None`` without ``heatmap``).

    Raises:
        MedclassError: The instances cannot be read or do not fit the model (one-line message without
            identifiers: the file names are spool hashes).
    """
    from medclass.metrics.positive import triage_spec, urgency

    x, owners = _stack(predictor, files)
    probs = predictor.probs(x)
    labels = predictor.decide(probs)
    sets, refer = predictor.referral(probs)
    urgent = urgency(probs, predictor.meta)
    best = int(np.argmax(urgent))
    names = predictor.label_names
    if predictor.task == "multilabel":
        label = "+".join(n for n, v in zip(names, labels[best], strict=True) if v) or "none"
    else:
        label = names[int(labels[best])]
    result = SeriesResult(
        label=label,
        probs={n: float(v) for n, v in zip(names, probs[best], strict=True)},
        threshold=predictor.threshold,
        urgency=float(urgent[best]),
        refer=None if refer is None else bool(refer[best]),
        model=model_info(predictor),
        source_index=owners[best] if len(owners) > best else 0,
        triage_classes=list(triage_spec(predictor.meta)["classes"]),
    )
    picture = _heat_overlay(predictor, x[best : best + 1], probs[best : best + 1]) if heatmap else None
    return result, picture


def _heat_overlay(predictor: Any, image: Any, probs: np.ndarray) -> np.ndarray:
    """Grad-CAM overlay of one prepared image for its decided class."""
    from medclass.explain.methods import default_targets, saliency
    from medclass.explain.output import overlay
    from medclass.inference import to_input
    from medclass.metrics.positive import positive_index

    target = default_targets(probs, predictor.task, predictor.threshold, positive_index=positive_index(predictor.meta))
    heat = saliency(predictor.model, predictor.task, to_input(image, predictor.prep), target, "gradcam")[0]
    arr = image[0].numpy()
    if heat.ndim == 3:
        arr, heat = arr[:, heat.shape[0] // 2], heat[heat.shape[0] // 2]
    return overlay(arr, heat)
