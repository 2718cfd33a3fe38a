"""Networks from a checkpoint's description: ``model.json``'s ``architecture`` entry, one model or an ensemble.

The checkpoint loader, training, export and the service all build models here, so loading a model
never imports the trainer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medclass.models.registry import create_model


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build the untrained network a checkpoint's ``architecture`` entry describes.

    Args:
        arch: ``{"name", "in_chans", "num_outputs", "spatial_dims"?, "kwargs"?, "truncate"?, "fusion"?}``, as
            :func:`medclass.training.loop.model_meta` writes it; ``truncate`` drops that many final stages;
            ``fusion`` wraps the network with clinical fields (:mod:`medclass.models.fusion`); ``"norm": "group"``
            replaces its BatchNorm layers by GroupNorm (:mod:`medclass.models.norm`).

    Returns:
        The network (random weights, training mode), taking ``(B, in_chans, H, W)`` or
        ``(B, in_chans, D, H, W)`` input (and, with ``fusion``, the ``(B, T)`` encoded fields) and giving
        ``(B, num_outputs)`` logits.
    """
    if arch.get("fusion"):
        from medclass.models.fusion import build_fusion

        return build_fusion(arch)
    model = create_model(
        arch["name"],
        in_chans=arch["in_chans"],
        num_classes=arch["num_outputs"],
        spatial_dims=arch.get("spatial_dims"),
        **arch.get("kwargs", {}),
    )
    if arch.get("truncate"):
        from medclass.models.truncate import truncate_stages

        model = truncate_stages(model, int(arch["truncate"]), name=arch["name"])
    if arch.get("norm") == "group":
        from medclass.models.norm import batchnorm_to_groupnorm

        model = batchnorm_to_groupnorm(model)
    return model


def member_architectures(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``architecture`` entry of each member of a checkpoint's model (a single model: its own, once).

    Ensembles list theirs in ``deep_ensemble.architectures``; without that list, every member is
    ``meta["architecture"]``.
    """
    ens = meta.get("deep_ensemble")
    if not ens:
        return [meta["architecture"]]
    return ens.get("architectures") or [meta["architecture"]] * int(ens["size"])


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The untrained network of a checkpoint's metadata (``model.json``), ready for its weights.

    A deep ensemble (``meta["deep_ensemble"]``) becomes a
    :class:`~medclass.trust.ensemble.ProbabilityAverage` of its members (weights under
    ``members.<i>.``) with the members' calibrations; anything else is :func:`build_model` of
    ``meta["architecture"]``.

    Returns:
        A module mapping ``(B, C, ...)`` input to ``(B, num_outputs)`` logits.
    """
    if "deep_ensemble" not in meta:
        return build_model(meta["architecture"])
    from medclass.trust.ensemble import ProbabilityAverage

    members = [build_model(arch) for arch in member_architectures(meta)]
    return ProbabilityAverage(members, meta["deep_ensemble"]["calibrations"], meta["task"])
