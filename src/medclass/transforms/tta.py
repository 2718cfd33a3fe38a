"""Test-time augmentation: the views of an input batch whose predicted probabilities are averaged.

A checkpoint lists its views in ``preprocessing["tta"]``, so evaluation, ``predict`` and any
service that loads it average over exactly the views chosen at training time. The original image
is always one view.

Views: ``hflip`` (last axis), ``vflip`` (second-last axis), ``shift`` (one pixel in each direction
along the last two axes, edges replicated: four views).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

TTA_VIEWS = ("hflip", "vflip", "shift")


def check_views(names: Sequence[str]) -> list[str]:
    """The view names, checked; raises ValueError naming an unknown one."""
    bad = [n for n in names if n not in TTA_VIEWS]
    if bad:
        raise ValueError(f"unknown test-time augmentation {bad} (use {', '.join(TTA_VIEWS)})")
    return list(names)


def _shift(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """Shift by one pixel along ``axis`` (negative index), replicating the edge."""
    n = x.shape[axis]
    pad = [0, 0] * (x.ndim - 2)
    k = 2 * (-axis - 1)
    pad[k + (0 if step > 0 else 1)] = 1
    padded = F.pad(x, pad, mode="replicate")
    return padded.narrow(axis, 0 if step > 0 else 1, n)


def iter_tta_views(x: torch.Tensor, names: Sequence[str]) -> Iterator[torch.Tensor]:
    """``x`` then each view of a normalised float batch ``(B, C, *spatial)``, one at a time (one view in memory)."""
    yield x
    for name in check_views(names):
        if name == "hflip":
            yield x.flip(-1)
        elif name == "vflip":
            yield x.flip(-2)
        else:
            for axis in (-1, -2):
                for step in (1, -1):
                    yield _shift(x, axis, step)


def tta_views(x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """``[x, *views]`` for a normalised float batch ``(B, C, *spatial)``."""
    return list(iter_tta_views(x, names))
