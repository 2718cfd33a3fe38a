"""Deep ensembles trained as one run (``train.ensemble: K``): K members, one checkpoint.

Member ``i`` is the run's configuration with seed ``seed * K + i`` (so the members of runs with
different seeds never share a seed) and, under ``train.max_minutes``, an even share of what the
members before it left of the budget. Each member is a complete run in ``OUT/members/m<i>``
(checkpoint, calibration, metrics, report); a member that finished is not trained again when the
run resumes. The run folder then holds their :class:`~medclass.trust.ensemble.ProbabilityAverage`
as one checkpoint: every member's weights in ``model.safetensors`` (``members.<i>.`` prefixes)
and, in ``model.json``, the members' own calibrations under ``deep_ensemble``. Prediction,
evaluation, export, the service and explanations load it like any run, and the calibration,
operating threshold, conformal sets and referral of the averaged probabilities are fitted on
validation like a single model's (Lakshminarayanan et al. 2017).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from medclass.config import RunConfig
from medclass.trust.ensemble import ProbabilityAverage

# fitted on validation for the averaged probabilities, so not inherited from the first member
_REFITTED = ("calibration", "threshold", "conformal", "referral", "format_version")


def member_dir(out: str | Path, index: int) -> Path:
    """The folder of member ``index`` of the ensemble run in ``out``."""
    return Path(out) / "members" / f"m{index}"


def member_config(cfg: RunConfig, index: int, spent_minutes: float = 0.0) -> RunConfig:
    """Member ``index``'s configuration: one model (the next of ``model.members``), its own seed and budget.

    The share is what the earlier members left (``spent_minutes`` is their training time) split
    evenly among this member and those after it.
    """
    k = cfg.train.ensemble
    member = copy.deepcopy(cfg)
    member.train.ensemble = 1
    member.train.seed = cfg.train.seed * k + index
    if cfg.model.members:
        member.model.name = cfg.model.members[index % len(cfg.model.members)]
        member.model.members = []
    if cfg.train.max_minutes:
        member.train.max_minutes = max(cfg.train.max_minutes - spent_minutes, 1e-3) / (k - index)
    return member


def combine(members: list[tuple[nn.Module, dict[str, Any]]], seeds: list[int]) -> tuple[nn.Module, dict[str, Any]]:
    """The ensemble model and its ``model.json`` content from trained, calibrated members.

    Args:
        members: ``(model, metadata)`` of each member, all of the same architecture and data.
        seeds: Each member's training seed (recorded).

    Returns:
        ``(ProbabilityAverage in eval mode, metadata)``; the metadata lacks what is fitted on the
        averaged probabilities (calibration, threshold, conformal sets, referral).
    """
    first = members[0][1]
    calibrations = [meta.get("calibration") for _, meta in members]
    model = ProbabilityAverage([m for m, _ in members], calibrations, first["task"])
    meta = {k: v for k, v in first.items() if k not in _REFITTED}
    meta["deep_ensemble"] = {
        "size": len(members),
        "seeds": list(seeds),
        "calibrations": calibrations,
        "architectures": [m["architecture"] for _, m in members],
    }
    return model.eval(), meta


def ensemble_history(histories: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The members' epoch rows one after another, numbered through (``epoch``) and by member."""
    rows, n = [], 0
    for i, history in enumerate(histories):
        for row in history:
            n += 1
            rows.append({"epoch": n, "member": i, **{k: v for k, v in row.items() if k != "epoch"}})
    return rows
