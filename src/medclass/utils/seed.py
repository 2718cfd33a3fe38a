"""Seeding: one call makes a run reproducible on the CPU."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch generator for explicit randomness.

    Args:
        seed: Any integer.

    Returns:
        A ``torch.Generator`` seeded with ``seed``; pass it to anything random (shuffling,
        augmentation) instead of relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
