"""Split-conformal prediction sets with adaptive (APS) or regularised adaptive (RAPS) scores.

Romano et al. 2020 (APS) and Angelopoulos et al. 2021 (RAPS). With the classes of one image
sorted by probability, the score of class ``k`` is the probability mass ranked above it, plus
``u * p_k`` (``u`` uniform in [0, 1]: randomisation makes coverage exact rather than
conservative), plus RAPS's penalty ``lam * max(0, rank_k - k_reg)`` (rank from 1) that keeps
sets small. On a calibration split the threshold ``q`` is the ``ceil((n + 1)(1 - alpha)) / n``
empirical quantile of the true classes' scores; a new image's set is every class whose score is at
most ``q``. When calibration and test images are exchangeable, the set holds the true class with
probability at least ``1 - alpha`` (and at most ``1 - alpha + 1 / (n + 1)``).

Sets may be empty (a randomised APS set is, when even the top class's score exceeds ``q``); an
empty set, like one of several classes, is a case to refer. Binary probabilities count as two
classes. Multi-label outputs are not supported.

Randomness comes from an explicit generator (``numpy.random.Generator``); the same seed gives the
same sets.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_ALPHAS = tuple(round(0.01 * k, 2) for k in range(1, 31))  # 0.01 ... 0.30, stored in checkpoints


def _sorted(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: class order by descending probability, the sorted probabilities, and each class's rank (0-based)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(probs.shape[1])[None, :].repeat(len(probs), 0), axis=1)
    return order, sorted_p, ranks


def class_scores(
    probs: ArrayLike,
    *,
    randomized: bool = True,
    lam: float = 0.0,
    k_reg: int = 0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(N, K)`` conformity scores of every class of every image (lower = more plausible).

    Args:
        probs: ``(N, K)`` probabilities (rows sum to 1).
        randomized: Use ``u * p_k`` with ``u`` uniform per image (exact coverage); else ``p_k`` (``u = 1``).
        lam: RAPS penalty per rank beyond ``k_reg`` (0 = APS).
        k_reg: Ranks free of penalty.
        rng: Source of ``u``; a fresh ``default_rng(0)`` when ``None``.
    """
    p = np.asarray(probs, dtype=np.float64)
    _, sorted_p, ranks = _sorted(p)
    above = np.cumsum(sorted_p, axis=1) - sorted_p  # mass ranked strictly above each sorted position
    mass_above = np.take_along_axis(above, ranks, axis=1)
    u = (rng or np.random.default_rng(0)).uniform(size=(len(p), 1)) if randomized else np.ones((len(p), 1))
    return mass_above + u * p + lam * np.maximum(0, ranks + 1 - k_reg)


def conformal_threshold(true_scores: ArrayLike, alpha: float) -> float:
    """The split-conformal quantile ``q`` of the calibration images' true-class scores.

    Returns ``inf`` (every set is every class) when ``alpha`` is below ``1 / (n + 1)``.
    """
    s = np.sort(np.asarray(true_scores, dtype=np.float64))
    n = s.size
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        warnings.warn(f"conformal_threshold: {n} calibration samples are too few for alpha {alpha}", stacklevel=2)
        return math.inf
    return float(s[k - 1])


def fit_conformal(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    lam: float = 0.0,
    k_reg: int = 0,
    seed: int = 0,
) -> dict[str, object]:
    """Thresholds for ``alphas`` from a calibration split; the dict a checkpoint stores.

    Args:
        probs: ``(N, K)`` calibrated probabilities of the calibration (validation) images.
        labels: ``(N,)`` class indices; NaN rows are left out.
        alphas: Miscoverage levels to store thresholds for.
        lam: RAPS penalty (0 = APS).
        k_reg: RAPS free ranks.
        seed: Seed of the randomisation.

    Returns:
        ``{"method", "lam", "k_reg", "n", "alphas", "thresholds"}``.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    known = ~np.isnan(y)
    p, y = p[known], y[known].astype(int)
    scores = class_scores(p, lam=lam, k_reg=k_reg, rng=np.random.default_rng(seed))
    true_scores = scores[np.arange(len(y)), y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thresholds = [conformal_threshold(true_scores, a) for a in alphas]
    return {
        "method": "raps" if lam else "aps",
        "lam": lam,
        "k_reg": k_reg,
        "n": int(len(y)),
        "alphas": list(alphas),
        "thresholds": [t if math.isfinite(t) else None for t in thresholds],
    }


def threshold_for(conformal: dict[str, object], alpha: float) -> float:
    """The stored threshold for ``alpha``: the nearest stored level at or below it (conservative)."""
    alphas = np.asarray(conformal["alphas"], dtype=float)
    ok = alphas <= alpha + 1e-12
    if not ok.any():
        raise ValueError(f"alpha {alpha} is below the smallest stored level {alphas.min()}")
    t = conformal["thresholds"][int(np.flatnonzero(ok)[np.argmax(alphas[ok])])]  # type: ignore[index]
    return math.inf if t is None else float(t)


def prediction_sets(
    probs: ArrayLike, threshold: float, *, lam: float = 0.0, k_reg: int = 0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``(N, K)`` boolean membership: class ``k`` is in image ``i``'s set when its score is at most ``threshold``."""
    return class_scores(probs, lam=lam, k_reg=k_reg, rng=rng) <= threshold


def set_metrics(sets: np.ndarray, labels: ArrayLike) -> dict[str, float]:
    """Empirical coverage, mean set size and share of singleton and empty sets over labelled rows."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    known = ~np.isnan(y)
    s, y = sets[known], y[known].astype(int)
    if len(y) == 0:
        warnings.warn("set_metrics: no labelled samples; returning nan", RuntimeWarning, stacklevel=2)
        return {"coverage": math.nan, "mean_size": math.nan, "singletons": math.nan, "empty": math.nan}
    size = s.sum(1)
    return {
        "coverage": float(s[np.arange(len(y)), y].mean()),
        "mean_size": float(size.mean()),
        "singletons": float((size == 1).mean()),
        "empty": float((size == 0).mean()),
    }
