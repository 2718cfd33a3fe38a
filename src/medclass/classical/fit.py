"""Fit a classical baseline: features, (vocabulary,) scaler and linear SVMs on train, Platt scaling on validation.

Written like :func:`medclass.training.loop.fit` for networks: it saves ``model.safetensors`` and
``model.json`` (via :func:`medclass.checkpoint.save_model`), ``config.yaml`` and a one-row
``history.csv``, so everything after training (calibration, thresholds, evaluation, the report)
is shared.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass import checkpoint
from medclass.classical.features import dense_descriptors
from medclass.classical.model import ClassicalModel, build_classical, features_of
from medclass.config import RunConfig, dump_yaml
from medclass.data.dataset import Dataset
from medclass.errors import ConfigError
from medclass.trust.scaling import fit_vector_scaling
from medclass.utils.files import write_text

_MAX_DESCRIPTORS = 100_000


def _grey(images: torch.Tensor) -> np.ndarray:
    if images.ndim != 4:
        raise ConfigError("classical models take 2D images, not volumes")
    return images.float().mean(1).round().to(torch.uint8).numpy()


def _vocabulary(images: np.ndarray, kind: str, size: int, seed: int) -> np.ndarray:
    """k-means visual words from (a sample of) the training images' dense descriptors."""
    from sklearn.cluster import MiniBatchKMeans

    desc = np.concatenate(dense_descriptors(images, kind))
    rng = np.random.default_rng(seed)
    if len(desc) > _MAX_DESCRIPTORS:
        desc = desc[rng.choice(len(desc), _MAX_DESCRIPTORS, replace=False)]
    km = MiniBatchKMeans(n_clusters=size, random_state=seed, n_init=3, batch_size=4096).fit(desc)
    return km.cluster_centers_.astype(np.float32)


def _fit_svms(x: np.ndarray, labels: np.ndarray, task: str, k: int, *, balanced: bool, seed: int) -> tuple:
    """One linear SVM per output (binary: one; multi-class: one-vs-rest; multi-label: one per label)."""
    from sklearn.svm import LinearSVC

    coef, intercept = np.zeros((k, x.shape[1]), np.float32), np.zeros(k, np.float32)
    for j in range(k):
        if task == "binary":
            known = ~np.isnan(labels)
            y = labels[known] == 1
        elif task == "multilabel":
            known = ~np.isnan(labels[:, j])
            y = labels[known, j] == 1
        else:
            known = ~np.isnan(labels)
            y = labels[known] == j
        if y.all() or not y.any():  # a class absent from training: it never wins
            intercept[j] = 1.0 if y.all() else -1.0
            continue
        svm = LinearSVC(C=0.1, class_weight="balanced" if balanced else None, random_state=seed, max_iter=5000)
        svm.fit(x[known], y)
        coef[j], intercept[j] = svm.coef_[0], svm.intercept_[0]
    return coef, intercept


def fit_classical(cfg: RunConfig, dataset: Dataset, out_dir: str | Path, *, meta: dict[str, Any]) -> list[dict]:
    """Fit ``cfg.model.name`` (``classical/...``) on ``dataset`` and save it like a trained network.

    Args:
        cfg: The run configuration (``optim.class_weight: balanced`` weights the SVM's classes).
        dataset: The data; the train split fits, the validation split calibrates.
        out_dir: The run folder.
        meta: The ``model.json`` content for the run (:func:`medclass.training.loop.model_meta`); its
            architecture gains the sizes the model is rebuilt with.

    Returns:
        The one-row history.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "config.yaml", dump_yaml(cfg))
    t0 = time.perf_counter()
    seed = cfg.train.seed
    train, val = dataset.splits["train"], dataset.splits["val"]
    probe = build_classical(cfg.model.name, num_classes=1)
    kind = probe.kind
    images = _grey(train.images)
    vocab = _vocabulary(images, kind, 128, seed) if kind in ("sift", "orb") else None
    feats = features_of(images, kind, vocab)
    mean, scale = feats.mean(0), feats.std(0) + 1e-6
    x = (feats - mean) / scale
    k = meta["architecture"]["num_outputs"]
    coef, intercept = _fit_svms(
        x, train.labels, dataset.task, k, balanced=cfg.optim.class_weight == "balanced", seed=seed
    )
    arch = meta["architecture"]
    arch["kwargs"] = {
        "feature_dim": int(x.shape[1]),
        "vocab_size": 0 if vocab is None else int(vocab.shape[0]),
        "descriptor_dim": 0 if vocab is None else int(vocab.shape[1]),
    }
    model = build_classical(cfg.model.name, num_classes=k, **arch["kwargs"])
    state = {
        "vocabulary": torch.from_numpy(vocab) if vocab is not None else model.vocabulary,
        "mean": torch.from_numpy(mean.astype(np.float32)),
        "scale": torch.from_numpy(scale.astype(np.float32)),
        "coef": torch.from_numpy(coef),
        "intercept": torch.from_numpy(intercept),
    }
    model.load_state_dict({**model.state_dict(), **state})
    val_feats = (features_of(_grey(val.images), kind, vocab) - mean) / scale
    decision = model.forward_head(torch.from_numpy(val_feats.astype(np.float32)), pre_logits=True).numpy()
    a, b = fit_vector_scaling(decision, val.labels, dataset.task)  # Platt scaling per output
    model.platt_a, model.platt_b = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    checkpoint.save_model(out_dir, model.eval(), meta)
    history = [{"epoch": 1, "seconds": round(time.perf_counter() - t0, 2)}]
    write_text(out_dir / "history.csv", "epoch,seconds\n" + f"1,{history[0]['seconds']}\n")
    return history


__all__ = ["ClassicalModel", "fit_classical"]
