"""Pretext tasks' inputs and targets, from an explicit generator: quarter turns, shuffled slabs, masks."""

from __future__ import annotations

import itertools

import torch

#: The six orders of three slabs; the class of a shuffled volume is the index of its order here.
SLAB_ORDERS = tuple(itertools.permutations(range(3)))


def rotate_batch(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn each 2D image by a random multiple of 90 degrees (Gidaris et al. 2018).

    Args:
        x: ``(B, C, H, W)`` with ``H == W``.
        generator: Source of the turns.

    Returns:
        ``(turned images (B, C, H, W), turns (B,) int64 in 0..3)``.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square 2D images (B, C, H, H), got {tuple(x.shape)}")
    k = torch.randint(0, 4, (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for turn in range(4):
        rows = k == turn
        if rows.any():
            out[rows] = torch.rot90(x[rows], turn, dims=(-2, -1))
    return out, k


def shuffle_slabs(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each volume into three slabs along depth and put them in a random order (slice-order prediction).

    Args:
        x: ``(B, C, D, H, W)`` with ``D`` divisible by 3 (otherwise the last ``D % 3`` slices stay in place).
        generator: Source of the orders.

    Returns:
        ``(shuffled volumes (B, C, D, H, W), order index (B,) int64 into SLAB_ORDERS)``.
    """
    if x.ndim != 5:
        raise ValueError(f"slice order needs volumes (B, C, D, H, W), got {tuple(x.shape)}")
    d = x.shape[2] // 3
    label = torch.randint(0, len(SLAB_ORDERS), (x.shape[0],), generator=generator)
    out = x.clone()
    for i, order in enumerate(SLAB_ORDERS):
        rows = label == i
        if rows.any():
            for dst, src in enumerate(order):
                out[rows, :, dst * d : (dst + 1) * d] = x[rows, :, src * d : (src + 1) * d]
    return out, label


def patch_mask(shape: torch.Size, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A random mask of square (cubic) patches: ``round(ratio * patches)`` of each image's patches hidden.

    Args:
        shape: The batch shape ``(B, C, *spatial)``; every spatial side divisible by ``patch`` (a partial
            last patch is masked with its neighbour's choice).
        patch: Patch side in pixels.
        ratio: Share of patches hidden, in (0, 1).
        generator: Source of the choice.

    Returns:
        ``(B, 1, *spatial)`` float mask, 1 = hidden.
    """
    b, spatial = shape[0], tuple(shape[2:])
    grid = tuple(-(-s // patch) for s in spatial)
    n = 1
    for g in grid:
        n *= g
    hidden = max(1, round(ratio * n))
    scores = torch.rand(b, n, generator=generator)
    rank = scores.argsort(dim=1).argsort(dim=1)
    mask = (rank < hidden).float().view(b, 1, *grid)
    for axis, s in enumerate(spatial):
        mask = mask.repeat_interleave(patch, dim=2 + axis).narrow(2 + axis, 0, s)
    return mask
