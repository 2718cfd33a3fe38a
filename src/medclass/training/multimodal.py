"""Training with clinical fields: which fusion a run uses, the schema it fits, and what its checkpoint records.

``data.tabular`` names manifest columns; the run fits a :class:`~medclass.data.tabular.TabularSchema` on the
training split only, stores it as ``model.json``'s ``preprocessing.tabular`` and wraps the image model in a
:class:`~medclass.models.fusion.FusionModel` (``architecture.fusion``). With ``model.fusion: none`` and columns
given, the run uses ``concat``: naming clinical columns asks for them to be used, and ``concat`` is the plain,
robust choice (``film`` and ``late`` are a flag away). The loop itself only passes each batch's encoded rows
beside its images (:func:`medclass.inference.split_tabular`).
"""

from __future__ import annotations

import logging
from typing import Any

from medclass.config import RunConfig
from medclass.data.tabular import TabularSchema, fit_schema
from medclass.errors import ConfigError

log = logging.getLogger(__name__)


def fusion_method(cfg: RunConfig) -> str:
    """The fusion the run trains: ``model.fusion``, or ``concat`` when it is ``none`` and ``data.tabular`` is set."""
    if cfg.model.fusion == "none" and cfg.data.tabular:
        return "concat"
    return cfg.model.fusion


def resolve_fusion(cfg: RunConfig, dataset: Any = None) -> None:
    """Settle ``model.fusion`` in ``cfg`` (``concat`` for ``none`` with columns) and refuse what cannot work with it.

    With ``dataset``, every split is encoded once with the schema fitted on its training split, so a value that
    cannot be read fails now, before training, not at the test split's evaluation.

    Raises:
        ConfigError: Fusion without columns, and options that feed the model one input (classical models,
            deep ensembles, semi-supervised training, mixup/cutmix, which would mix images but not their fields).
        DataError: A clinical value that cannot be read (file, row and column named).
    """
    method = fusion_method(cfg)
    if method == "none":
        return
    if not cfg.data.tabular:
        raise ConfigError(f"model.fusion {method}: needs clinical fields; name them with --tabular COL,COL")
    if cfg.model.fusion == "none":
        log.info("clinical fields %s: fusion concat (model.fusion)", ", ".join(cfg.data.tabular))
    cfg.model.fusion = method
    if not 0 <= cfg.model.modality_dropout < 1:
        raise ConfigError(f"model.modality_dropout: {cfg.model.modality_dropout} is not in [0, 1)")
    a = cfg.augment
    refused = [
        (cfg.model.name.lower().startswith("classical/"), "classical models take no clinical fields"),
        (cfg.train.ensemble > 1 or len(cfg.model.members) > 1, "deep ensembles of fusion models are not supported"),
        (cfg.semi.method != "none", "semi-supervised training takes images only"),
        (a.enabled and (a.mixup > 0 or a.cutmix > 0), "mixup/cutmix would mix images but not their fields"),
    ]
    for bad, why in refused:
        if bad:
            raise ConfigError(f"model.fusion {method} with --tabular: {why}")
    if dataset is not None:
        schema = tabular_schema(dataset, cfg.data.tabular)
        for split in dataset.splits.values():
            schema.transform(split.tabular, n=len(split))
        warn_leaking_fields(dataset, cfg.data.tabular)


def warn_leaking_fields(dataset: Any, columns: list[str]) -> list[str]:
    """Warn about clinical fields that give the label away (:mod:`medclass.data.column_leaks`): each fitted on the
    training split alone and scored on validation and test. Returns the warnings (none for multi-label data)."""
    import numpy as np

    from medclass.data.column_leaks import column_leaks

    splits = [dataset.splits[s] for s in ("train", "val", "test") if s in dataset.splits]
    if dataset.task == "multilabel" or any(s.tabular is None for s in splits):
        return []
    cells = {c: np.concatenate([s.tabular.columns[c] for s in splits]) for c in columns}
    labels = np.concatenate([s.labels for s in splits]).astype(np.float64)
    train = np.arange(len(labels)) < len(splits[0])
    warnings = [
        f"clinical field '{c.column}' {c.verdict()} on its own ({c.metric.replace('_', ' ')} {c.score:.3f}): "
        "the model may learn it instead of the image"
        for c in column_leaks(cells, labels, train, dataset.label_names)
        if c.flagged
    ]
    for w in warnings:
        log.warning("%s", w)
    return warnings


def tabular_schema(dataset: Any, columns: list[str]) -> TabularSchema:
    """The schema of ``columns`` fitted on ``dataset``'s training split only.

    Raises:
        ConfigError: The training split carries no clinical fields (the data was loaded without ``tabular``).
    """
    table = dataset.splits["train"].tabular
    if table is None:
        raise ConfigError(f"data.tabular {', '.join(columns)}: {dataset.name} was loaded without clinical fields")
    return fit_schema(table, columns)


def fusion_entry(cfg: RunConfig, dataset: Any, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """``architecture.fusion`` of ``model.json``: method, encoded width, the all-missing vector, modality dropout
    and the input shape (sizes the image features); ``None`` for an image-only run."""
    method = fusion_method(cfg)
    if method == "none" or schema is None:
        return None
    s = TabularSchema.from_json(schema)
    return {
        "method": method,
        "tabular_dim": s.width,
        "missing": s.missing_vector().tolist(),
        "modality_dropout": cfg.model.modality_dropout,
        "input_shape": list(dataset.sample_shape),
        "features": s.feature_names(),
    }
