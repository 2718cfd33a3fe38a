"""Truncating a network's final stages: a smaller, faster model that keeps the early (often more transferable) layers.

Works on medclass's own models (stages are the children of ``features`` after the stem) and on
timm models that list their stages in ``feature_info`` and whose head only needs the channel
count (ResNet-like: pooling plus a linear layer); any other model gets a clear :class:`ModelError`. The
number of dropped stages is stored in the checkpoint's architecture, so inference rebuilds the
same network.
"""

from __future__ import annotations

import torch
from torch import nn

from medclass.errors import ModelError
from medclass.models.base import Classifier
from medclass.models.stages import stage_names, timm_stage_entries


def _last_channels(module: nn.Module) -> int:
    """Output channels of a feature extractor: the last batch norm's, else the last convolution's."""
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return int(m.num_features)
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.out_channels)
    raise ModelError(f"cannot tell the output channels of {type(module).__name__}")


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def truncate_stages(model: nn.Module, n: int, *, name: str = "model") -> nn.Module:
    """Drop the last ``n`` stages of ``model`` and give it a fresh head sized to what remains.

    Args:
        model: A medclass :class:`Classifier` or a timm model with ``feature_info``.
        n: Stages to drop (0 returns ``model`` unchanged); at least one stage must remain.
        name: The model's name, for messages.

    Returns:
        The same module, changed in place: ``num_features`` and ``default_cam_layer`` follow the
        new last stage; the head has the same number of outputs as before.

    Raises:
        ModelError: ``n`` leaves no stage, or the architecture cannot be truncated this way.
    """
    if n <= 0:
        return model
    num_classes = int(getattr(model, "num_classes", 0))
    if isinstance(model, Classifier) and isinstance(model.features, nn.Sequential):
        stages = [path.removeprefix("features.") for path in stage_names(model)]
        if n >= len(stages):
            raise ModelError(f"{name}: cannot drop {n} of its {len(stages)} stages (model.truncate)")
        for key in stages[-n:]:
            delattr(model.features, key)
        model.num_features = _last_channels(model.features)
        model.default_cam_layer = f"features.{stages[-n - 1]}"
        model.reset_classifier(num_classes)
        return model
    stages = timm_stage_entries(model)
    if not stages or not hasattr(model, "reset_classifier"):
        raise ModelError(f"{name}: truncation needs a medclass model or a timm model with feature_info")
    if n >= len(stages):
        raise ModelError(f"{name}: cannot drop {n} of its {len(stages)} stages (model.truncate)")
    for entry in stages[-n:]:
        _set_module(model, str(entry["module"]), nn.Identity())
    keep = stages[-n - 1]
    model.num_features = int(keep["num_chs"])
    model.default_cam_layer = str(keep["module"])
    in_chans = next(m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)).in_channels
    try:
        model.reset_classifier(num_classes)
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, 64, 64))
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ModelError(f"{name}: cannot be truncated (its head does not fit the new last stage: {err})") from None
    return model.train()
