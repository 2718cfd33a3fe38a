"""A frozen encoder measured on labels: linear and k-nearest-neighbour probes.

The encoder's pooled features of the un-augmented images are computed once per split, two ways: the
final embedding, and the embedding with every earlier stage's globally pooled output before it ("stages",
as linear evaluations of self-supervised encoders concatenate several layers: DINO's takes its last four
blocks, Caron et al. 2021). The linear probe is a multinomial logistic regression on standardised features;
which features and its L2 strength are chosen on the validation split (AUC). On PneumoniaMNIST's SimCLR
encoders (seeds 1 and 2) the stage features raised validation AUC by 0.0006 and 0.0003 (BENCHMARKS.md,
"Learning from few labels"). The k-NN probe votes among the ``k`` training images with the most similar
final embeddings (cosine), each weighted by ``exp(similarity / 0.07)`` (Wu et al. 2018). Binary, multi-class and
ordinal tasks are probed; a multi-label task is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.data.dataset import Dataset, Split
from medclass.errors import ConfigError
from medclass.inference import model_device, to_input
from medclass.metrics import medmnist

PROBES = ("linear", "knn")
C_GRID = (0.01, 0.1, 1.0, 10.0)
FEATURES = ("final", "stages")  # the linear probe's feature sets, see encode()


@torch.inference_mode()
def encode(
    encoder: nn.Module, images: torch.Tensor, prep: dict[str, Any], batch_size: int = 512
) -> dict[str, np.ndarray]:
    """Pooled features of ``uint8`` images ``(N, C, ...)`` (evaluation mode), two ways.

    Returns:
        ``{"final": (N, F), "stages": (N, F_1 + ... + F_{S-1} + F)}`` float32: the embedding alone, and the
        spatial means of every stage's output but the last (:func:`~medclass.models.stages.stage_names`)
        before it. An encoder that lists no stages gives the embedding for both.
    """
    from medclass.models.stages import stage_names
    from medclass.ssl.methods import pooled

    encoder.eval()
    device = model_device(encoder)
    caught: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        caught.append(output.float().mean(dim=tuple(range(2, output.ndim))))

    hooks = [encoder.get_submodule(path).register_forward_hook(keep) for path in stage_names(encoder)[:-1]]
    final, stages = [], []
    try:
        for i in range(0, len(images), batch_size):
            caught.clear()
            z = pooled(encoder, to_input(images[i : i + batch_size], prep).to(device)).float()
            final.append(z.cpu())
            stages.append(torch.cat([*caught, z], dim=1).cpu())
    finally:
        for hook in hooks:
            hook.remove()
    if not final:
        empty = np.zeros((0, 0), np.float32)
        return {"final": empty, "stages": empty}
    return {"final": torch.cat(final).numpy(), "stages": torch.cat(stages).numpy()}


def _known(split: Split) -> np.ndarray:
    return ~np.isnan(split.labels.reshape(len(split), -1)).any(axis=1)


def linear_probe(
    train: tuple[dict[str, np.ndarray], np.ndarray], val: tuple[dict[str, np.ndarray], np.ndarray], task: str
) -> tuple[Any, dict[str, Any]]:
    """Logistic regression on standardised features, the features (:data:`FEATURES`) and ``C`` chosen on ``val``.

    Args:
        train: ``({name: (N, F_name)}, labels (N,))`` as :func:`encode` gives them.
        val: The same for the validation split, which chooses by AUC (ties keep the earlier, simpler choice).
        task: ``binary``, ``multiclass`` or ``ordinal``.

    Returns:
        ``(predict, choice)``: ``predict({name: (M, F_name)}) -> (M, K)`` probabilities and
        ``{"features": name, "c": C}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    best, best_auc, choice, scalers = None, -np.inf, {}, {}
    for name in FEATURES:
        scalers[name] = StandardScaler().fit(train[0][name])  # once per feature set, shared by every C
        x_train, x_val = scalers[name].transform(train[0][name]), scalers[name].transform(val[0][name])
        for c in C_GRID:
            clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, train[1])
            auc = medmnist.auc(val[1], _full_proba(clf, x_val, task), task) if len(val[1]) else 0.0
            if auc > best_auc:
                best, best_auc, choice = clf, auc, {"features": name, "c": c}
    scaler = scalers[choice["features"]]
    return (lambda x: _full_proba(best, scaler.transform(x[choice["features"]]), task)), choice


def _full_proba(clf: Any, x: np.ndarray, task: str, num_classes: int | None = None) -> np.ndarray:
    """``predict_proba`` with a column for every class index up to the largest seen (absent classes get 0)."""
    p = clf.predict_proba(x)
    classes = clf.classes_.astype(int)
    k = max(int(classes.max()) + 1, 2 if task == "binary" else 0, num_classes or 0)
    out = np.zeros((len(x), k), np.float64)
    out[:, classes] = p
    return out


def knn_probe(train: tuple[np.ndarray, np.ndarray], num_classes: int, k: int = 20, temperature: float = 0.07) -> Any:
    """Similarity-weighted k-NN vote over L2-normalised features; returns ``(N, F) -> (N, K)`` probabilities."""
    feats = train[0] / np.maximum(np.linalg.norm(train[0], axis=1, keepdims=True), 1e-12)
    labels = train[1].astype(int)
    k = min(k, len(labels))

    def predict(x: np.ndarray) -> np.ndarray:
        q = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = q @ feats.T  # (N, M)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
        votes = np.zeros((len(x), num_classes))
        np.add.at(votes, (np.arange(len(x))[:, None].repeat(k, 1), labels[top]), w)
        return votes / votes.sum(axis=1, keepdims=True)

    return predict


def probe(
    encoder: nn.Module,
    prep: dict[str, Any],
    dataset: Dataset,
    kinds: tuple[str, ...] = PROBES,
    *,
    train_rows: np.ndarray | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Measure a frozen encoder on ``dataset``'s labels.

    Args:
        encoder: The network (``forward_features`` / ``forward_head(pre_logits=True)``).
        prep: Its preprocessing (scale, mean, std).
        dataset: Labelled data with ``train``, ``val`` and ``test`` splits.
        kinds: Probes to fit: ``linear``, ``knn``.
        train_rows: Fit on these training rows only (a labelled subset); ``None``: all of them.

    Returns:
        ``{kind: {split: {"auc", "acc", "n"}}}`` for the validation and test splits; the linear probe's
        splits also name the ``features`` and ``c`` chosen on validation.

    Raises:
        ConfigError: An unknown probe, or a multi-label task.
    """
    if unknown := [k for k in kinds if k not in PROBES]:
        raise ConfigError(f"probe: unknown kind {unknown[0]!r} (use {', '.join(PROBES)})")
    if dataset.task == "multilabel":
        raise ConfigError("probe: a multi-label task cannot be probed (binary, multi-class and ordinal tasks can)")
    train = dataset.splits["train"]
    if train_rows is not None:
        train = train.subset(train_rows)
    feats, labels = {}, {}
    for name, split in (("train", train), *((k, dataset.splits[k]) for k in ("val", "test") if k in dataset.splits)):
        keep = _known(split)
        feats[name] = encode(encoder, split.images[torch.from_numpy(keep)], prep)
        labels[name] = split.labels.reshape(len(split), -1)[keep, 0].astype(int)
    k = max(dataset.num_classes, 2)
    fitted, chosen = {}, {}
    if "linear" in kinds:
        fitted["linear"], chosen["linear"] = linear_probe(
            (feats["train"], labels["train"]), (feats["val"], labels["val"]), dataset.task
        )
    if "knn" in kinds:
        knn = knn_probe((feats["train"]["final"], labels["train"]), k)
        fitted["knn"] = lambda x: knn(x["final"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, predict in fitted.items():
        out[kind] = {}
        for name in ("val", "test"):
            if name in feats and len(labels[name]):
                p = predict(feats[name])
                p = np.pad(p, ((0, 0), (0, max(0, k - p.shape[1]))))
                out[kind][name] = {
                    "auc": float(medmnist.auc(labels[name], p, dataset.task)),
                    "acc": float(medmnist.acc(labels[name], p, dataset.task)),
                    "n": int(len(labels[name])),
                    **chosen.get(kind, {}),
                }
    return out


def probe_run(run: str | Path, dataset: Dataset, kinds: tuple[str, ...] = PROBES, **kwargs: Any) -> dict[str, Any]:
    """:func:`probe` the encoder of a run folder (a pretraining run, or any trained model's backbone)."""
    from medclass.checkpoint import load_model

    model, meta = load_model(run)
    return probe(model, meta["preprocessing"], dataset, kinds, **kwargs)
