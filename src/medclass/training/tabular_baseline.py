"""The clinical fields alone, by gradient boosting (scikit-learn): the baseline any image + fields model must beat.

The fields are encoded by the same schema a fusion run fits on its training split
(:func:`medclass.data.tabular.fit_schema`: standardised numbers, one-hot categories, missing indicators), then
:class:`sklearn.ensemble.HistGradientBoostingClassifier` is fitted on the training rows, its iterations
stopped early on the validation rows. (The small MLP baseline is the fusion method ``tabular_only``.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medclass.errors import ConfigError


def fit_gradient_boosting(dataset: Any, *, seed: int = 0, max_iter: int = 300) -> dict[str, np.ndarray]:
    """Fit on ``dataset``'s training split's clinical fields; class probabilities of every split.

    Args:
        dataset: A :class:`~medclass.data.dataset.Dataset` loaded with ``tabular`` columns, single-label task.
        seed: Seed of the boosting (its row subsampling for early stopping is not used: validation is given).
        max_iter: Most boosting iterations; the number kept is the best on the validation split's log loss.

    Returns:
        ``{split: probabilities (N, K)}`` with ``K = dataset.num_classes``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import log_loss

    from medclass.data.tabular import fit_schema

    train = dataset.splits["train"]
    if train.tabular is None:
        raise ConfigError(f"{dataset.source}: no clinical fields to fit on (give tabular columns)")
    if dataset.task == "multilabel":
        raise ConfigError(f"{dataset.source}: the gradient-boosting baseline takes single-label tasks")
    schema = fit_schema(train.tabular)
    x = {name: schema.transform(split.tabular, n=len(split)) for name, split in dataset.splits.items()}
    known = ~np.isnan(train.labels)
    y = train.labels[known].astype(int)
    classes = np.arange(dataset.num_classes)

    def probs(model: Any, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(classes)))
        out[:, model.classes_] = model.predict_proba(rows)
        return out

    val = dataset.splits.get("val")
    best, best_loss = None, np.inf
    for iters in sorted({25, 50, 100, 200, max_iter} & set(range(1, max_iter + 1))):
        model = HistGradientBoostingClassifier(
            max_iter=iters, learning_rate=0.05, early_stopping=False, random_state=seed
        )
        model.fit(x["train"][known], y)
        if val is None or len(val) == 0:
            best = model
            continue
        vk = ~np.isnan(val.labels)
        loss = log_loss(val.labels[vk].astype(int), probs(model, x["val"][vk]).clip(1e-7), labels=classes)
        if loss < best_loss:
            best, best_loss = model, loss
    return {name: probs(best, rows) for name, rows in x.items()}
