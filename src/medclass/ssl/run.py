"""A whole pretraining run: pool the unlabelled images, pretrain, probe the encoder, write ``metrics.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from medclass.config import RunConfig
from medclass.data.dataset import Dataset
from medclass.utils.files import write_json

log = logging.getLogger(__name__)


def pool_for(cfg: RunConfig, dataset: Dataset) -> tuple[torch.Tensor, dict[str, int]]:
    """``cfg.pretrain.unlabeled``'s images without copies of the task's val/test images, and the count per source."""
    from medclass.data.unlabeled import pool_unlabeled

    options = {k: v for k, v in cfg.data.file_options().items() if k in ("window", "frame", "max_pixels", "dedup")}
    parts, kept = [], {}
    for spec in cfg.pretrain.unlabeled:
        images = pool_unlabeled([spec], dataset, min_correlation=cfg.pretrain.copy_correlation, image_options=options)
        parts.append(images)
        kept[spec] = len(images)
    pool = torch.cat(parts) if parts else dataset.splits["train"].images[:0]
    return pool, kept


def run_pretraining(
    cfg: RunConfig, dataset: Dataset, out: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Pretrain, then probe the frozen encoder (linear and k-NN) on the task's labels; returns ``metrics.json``.

    The probes are a measurement, not a choice: nothing is selected on the test split.
    """
    from medclass.ssl.pretrain import pretrain
    from medclass.ssl.probe import probe_run

    out = Path(out)
    t0 = time.perf_counter()
    pool, kept = pool_for(cfg, dataset)
    history = pretrain(cfg, dataset, pool, out, pooled=kept, resume=resume, progress=progress)
    minutes = sum(r["seconds"] for r in history) / 60
    probes = probe_run(out, dataset) if dataset.task != "multilabel" else {}
    for kind, splits in probes.items():
        if "test" in splits:
            log.info("%s probe: test AUC %.4f, ACC %.4f", kind, splits["test"]["auc"], splits["test"]["acc"])
    metrics = {
        "task": "embedding",
        "dataset": dataset.name,
        "method": cfg.pretrain.method,
        "model": cfg.model.name,
        "images": {"training": len(dataset.splits["train"]), "unlabeled": kept},
        "epochs": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "pretrain_minutes": round(minutes, 3),
        "wall_minutes": round((time.perf_counter() - t0) / 60, 3),
        "probe": probes,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
