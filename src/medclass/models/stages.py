"""A network's stages: the modules whose outputs halve the resolution, in order, found the same way for every family.

medclass's own models keep their stages as the children of ``features`` after the stem; timm models list them
in ``feature_info`` (its first entry is the stem). Truncation drops the last stages; probes pool every stage's
output.
"""

from __future__ import annotations

from torch import nn

from medclass.models.base import Classifier

STEM_NAMES = ("stem", "pool")


def stage_names(model: nn.Module) -> list[str]:
    """Dotted module paths of ``model``'s stages, first to last (``[]``: the model does not list them).

    Args:
        model: A medclass :class:`~medclass.models.base.Classifier` with a ``features`` sequence, or a timm model
            with ``feature_info``.

    Returns:
        Paths for ``model.get_submodule``, e.g. ``["features.stage1", "features.stage2", "features.stage3"]``.
    """
    if isinstance(model, Classifier) and isinstance(model.features, nn.Sequential):
        return [f"features.{k}" for k, _ in model.features.named_children() if k not in STEM_NAMES]
    return [str(entry["module"]) for entry in timm_stage_entries(model)]


def timm_stage_entries(model: nn.Module) -> list[dict]:
    """A timm model's ``feature_info`` entries after the stem (``module``, ``num_chs``, ...); ``[]`` without it."""
    info = getattr(model, "feature_info", None)
    if not info:
        return []
    entries = info if isinstance(info, list) else info.get_dicts()
    return list(entries[1:])  # the first entry is the stem
