"""Normalisation swaps: BatchNorm replaced by GroupNorm, for training where rows of a batch must not mix.

DP-SGD clips each row's gradient alone, which BatchNorm forbids (a row's output depends on the batch), and small or
non-IID batches make batch statistics unreliable. A checkpoint whose ``architecture`` has ``"norm": "group"`` is
built with this swap (:func:`medclass.models.build.build_model`), so such a model loads like any other.
"""

from __future__ import annotations

import torch
from torch import nn

#: Groups of each GroupNorm at most (fewer when a layer's channels are not a multiple).
GROUPS = 8


def batchnorm_to_groupnorm(module: nn.Module, groups: int = GROUPS) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a GroupNorm carrying its affine parameters, in place.

    In-place activations are made out-of-place too (per-sample gradient hooks forbid modifying a hooked layer's
    output in place). Keeping the affine parameters keeps a residual block's zero-initialised last norm at zero.

    Args:
        module: Any network; BatchNorm1d/2d/3d anywhere inside it is replaced.
        groups: Most groups per GroupNorm: the largest divisor of the channels that is at most ``groups``.

    Returns:
        ``module`` itself, or the new GroupNorm when ``module`` is a BatchNorm.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _group_norm_like(module, groups)
    if getattr(module, "inplace", False) is True:
        module.inplace = False
    for name, child in module.named_children():
        new = batchnorm_to_groupnorm(child, groups)
        if new is not child:
            setattr(module, name, new)
    return module


def _group_norm_like(bn: nn.modules.batchnorm._BatchNorm, groups: int) -> nn.GroupNorm:
    """A GroupNorm over ``bn``'s channels with ``bn``'s weight and bias (running statistics are dropped)."""
    channels = bn.num_features
    g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    gn = nn.GroupNorm(g, channels, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        with torch.no_grad():
            gn.weight.copy_(bn.weight)
            gn.bias.copy_(bn.bias)
    return gn.to(bn.weight.device if bn.affine else None)
