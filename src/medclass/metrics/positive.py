"""The positive class of a binary task, and the triage ranking key, resolved once and read everywhere.

A binary task has a *positive class*: the finding that sensitivity, the operating point, referral,
the Grad-CAM gallery's true/false positives and triage are about. It is not always the second
class: BreastMNIST's label 0 is ``malignant``. Training resolves it by name (:func:`resolve_positive`:
``data.positive_class``, else the dataset catalog's, else index 1) and stores ``positive_class`` and
``positive_index`` in the checkpoint; checkpoints without them mean index 1.

Every binary rule then goes through two views of the data:

* :func:`binary_score`: ``P(positive)`` of each case, ``probs[:, p]`` (thresholds are thresholds on it);
* :func:`binary_truth`: 1 where the label is the positive class, 0 where it is the other, NaN unknown;

and :func:`binary_decision` turns ``P(positive) >= threshold`` back into a class index. Symmetric
figures (AUC, MedMNIST's ACC, calibration) need neither and keep their column-1 definitions.

Triage (the web page's worklist order) ranks cases by :func:`urgency`: for a binary task
``P(positive)``, otherwise the summed probability of the checkpoint's ``triage`` classes
(``eval.urgent_classes``; by default every class but the first, or every label of a multi-label task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medclass.errors import ConfigError

__all__ = [
    "binary_decision",
    "binary_score",
    "binary_truth",
    "checkpoint_entries",
    "positive_index",
    "resolve_positive",
    "resolve_triage",
    "triage_spec",
    "urgency",
]

DEFAULT_POSITIVE_INDEX = 1
"""The positive class of checkpoints and callers that name none: the second class."""


def _check_index(index: int) -> int:
    if index not in (0, 1):
        raise ValueError(f"positive_index must be 0 or 1, got {index!r}")
    return int(index)


def positive_index(meta: Mapping[str, Any] | None) -> int:
    """The positive class index stored in a checkpoint's ``model.json`` content (1 when absent).

    Args:
        meta: The checkpoint metadata, or ``None``.

    Returns:
        0 or 1.
    """
    value = (meta or {}).get("positive_index")
    return DEFAULT_POSITIVE_INDEX if value is None else _check_index(int(value))


def binary_score(probs: ArrayLike, positive_index: int = DEFAULT_POSITIVE_INDEX) -> np.ndarray:
    """``P(positive)`` of each case.

    Args:
        probs: ``(N, 2)`` class probabilities, or ``(N,)`` values that already are ``P(positive)``.
        positive_index: Column of the positive class.

    Returns:
        ``(N,)`` float64 scores.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return p
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"binary probabilities must have shape (N, 2) or (N,), got {p.shape}")
    return p[:, _check_index(positive_index)]


def binary_truth(labels: ArrayLike, positive_index: int = DEFAULT_POSITIVE_INDEX) -> np.ndarray:
    """Whether each case is of the positive class: 1.0, 0.0, or NaN where the label is unknown.

    Args:
        labels: ``(N,)`` (or ``(N, 1)``) class indices 0/1; NaN = unknown.
        positive_index: The positive class.

    Returns:
        ``(N,)`` float64 0/1/NaN.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    return np.where(np.isnan(y), np.nan, (y == _check_index(positive_index)).astype(np.float64))


def binary_decision(
    probs: ArrayLike,
    threshold: float | None,
    positive_index: int = DEFAULT_POSITIVE_INDEX,
    *,
    inclusive: bool = True,
) -> np.ndarray:
    """Class index of each case: the positive class when ``P(positive) >= threshold``, else the other.

    Args:
        probs: ``(N, 2)`` probabilities or ``(N,)`` ``P(positive)``.
        threshold: Threshold on ``P(positive)``; ``None`` means 0.5.
        positive_index: The positive class.
        inclusive: ``False`` decides positive only strictly above the threshold.

    Returns:
        ``(N,)`` int64 class indices.
    """
    score = binary_score(probs, positive_index)
    t = 0.5 if threshold is None else float(threshold)
    said = score >= t if inclusive else score > t
    p = _check_index(positive_index)
    return np.where(said, p, 1 - p).astype(np.int64)


def resolve_positive(
    task: str, label_names: Sequence[str], configured: str | None = None, dataset_name: str | None = None
) -> tuple[str, int] | None:
    """The positive class of a dataset by name and index, as training stores it.

    Order: ``configured`` (``data.positive_class``), else the catalog entry of ``dataset_name`` when the
    data has that entry's class names, else the second class.

    Args:
        task: The data's task.
        label_names: Its class names, by index.
        configured: A class name given by the user, or ``None``.
        dataset_name: The dataset's name (a catalog name for MedMNIST files).

    Returns:
        ``(name, index)``; ``None`` for tasks that are not binary.

    Raises:
        ConfigError: ``configured`` names no class of the data, or is given for a task that is not binary.
    """
    names = [str(n) for n in label_names]
    if task != "binary":
        if configured is not None:
            raise ConfigError(f"data.positive_class applies to binary tasks; this data is {task}")
        return None
    if configured is not None:
        if str(configured) not in names:
            raise ConfigError(f"data.positive_class: no class named {configured!r}; classes: {', '.join(names)}")
        return str(configured), names.index(str(configured))
    from medclass.data.catalog import CATALOG

    info = CATALOG.get(str(dataset_name or "").lower())
    if info is not None and info.positive_class is not None and list(info.label_names) == names:
        return info.positive_class, names.index(info.positive_class)
    return names[DEFAULT_POSITIVE_INDEX], DEFAULT_POSITIVE_INDEX


def resolve_triage(
    task: str, label_names: Sequence[str], urgent_classes: Sequence[str] = (), positive: int | None = None
) -> dict[str, Any]:
    """The checkpoint's ``triage`` entry: the classes whose summed probability ranks cases, by name and index.

    Args:
        task: The data's task.
        label_names: Its class (or label) names, by index.
        urgent_classes: ``eval.urgent_classes``; empty: every class but the first (multi-label: every label).
            A binary task ranks by its positive class and takes at most that one name here.
        positive: A binary task's positive index (default 1).

    Returns:
        ``{"classes": [name, ...], "indices": [int, ...]}``.

    Raises:
        ConfigError: An unknown class name, or a binary task asked to rank by its negative class.
    """
    names = [str(n) for n in label_names]
    unknown = [c for c in urgent_classes if str(c) not in names]
    if unknown:
        raise ConfigError(f"eval.urgent_classes: no class named {unknown[0]!r}; classes: {', '.join(names)}")
    if task == "binary":
        p = DEFAULT_POSITIVE_INDEX if positive is None else _check_index(positive)
        if any(str(c) != names[p] for c in urgent_classes):
            raise ConfigError(
                f"eval.urgent_classes: a binary task ranks by its positive class {names[p]!r}; "
                "set data.positive_class to change it"
            )
        indices = [p]
    elif urgent_classes:
        indices = sorted({names.index(str(c)) for c in urgent_classes})
    else:
        indices = list(range(len(names))) if task == "multilabel" else list(range(1, len(names)))
    return {"classes": [names[i] for i in indices], "indices": indices}


def triage_spec(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``triage`` entry, or its default for checkpoints written before it was stored."""
    stored = meta.get("triage")
    if stored and stored.get("indices") is not None:
        return {"classes": list(stored["classes"]), "indices": [int(i) for i in stored["indices"]]}
    return resolve_triage(meta["task"], meta["label_names"], positive=positive_index(meta))


def urgency(probs: ArrayLike, meta: Mapping[str, Any]) -> np.ndarray:
    """``(N,)`` triage key of each case (higher = read first): the summed probability of the triage classes.

    Args:
        probs: ``(N, K)`` calibrated probabilities.
        meta: The checkpoint metadata (its ``triage`` entry, task and labels).
    """
    p = np.asarray(probs, dtype=np.float64)
    return p[:, triage_spec(meta)["indices"]].sum(axis=1)


def checkpoint_entries(
    task: str,
    label_names: Sequence[str],
    *,
    dataset_name: str | None = None,
    positive_class: str | None = None,
    urgent_classes: Sequence[str] = (),
) -> dict[str, Any]:
    """What training stores in ``model.json``: ``positive_class`` and ``positive_index`` (binary) and ``triage``.

    Args:
        task: The data's task.
        label_names: Its class (or label) names, by index.
        dataset_name: The dataset's name, for the catalog's positive class.
        positive_class: ``data.positive_class``.
        urgent_classes: ``eval.urgent_classes``.

    Raises:
        ConfigError: A class name that the data does not have (the message lists the names).
    """
    resolved = resolve_positive(task, label_names, positive_class, dataset_name)
    out: dict[str, Any] = {}
    if resolved is not None:
        out["positive_class"], out["positive_index"] = resolved
    out["triage"] = resolve_triage(task, label_names, urgent_classes, None if resolved is None else resolved[1])
    return out
