"""Run artefacts: weights in safetensors, metadata in JSON, resumable training state. Nothing is pickled.

A run folder holds ``model.safetensors`` + ``model.json``: the architecture, the preprocessing, the
task, label names and operating threshold, so that inference never guesses. ``state.safetensors`` +
``state.json`` hold what ``--resume`` needs (model, optimiser, EMA and RNG state, history).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from medclass.errors import ModelError
from medclass.models.build import build_from_meta
from medclass.utils.files import atomic_path, write_json

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"
FORMAT_VERSION = 1


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a valid safetensors file ({err})") from None


def save_model(run_dir: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` atomically (weights first, metadata last)."""
    run_dir = Path(run_dir)
    _save_tensors(run_dir / MODEL_WEIGHTS, model.state_dict(), {"format": "medclass", "version": str(FORMAT_VERSION)})
    write_json(run_dir / MODEL_META, {"format_version": FORMAT_VERSION, **meta})


def read_model_meta(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's ``model.json`` (ModelError naming the file when missing or invalid)."""
    run_dir = Path(run_dir)
    path = run_dir / MODEL_META if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ModelError(f"{path}: not a medclass checkpoint (model.json missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot read model metadata ({err})") from None
    for key in ("architecture", "task", "label_names", "preprocessing"):
        if key not in meta:
            raise ModelError(f"{path}: model metadata lacks '{key}'")
    return meta


def load_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder from its metadata and load its weights.

    Returns:
        ``(model in eval mode, metadata dict)``.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelError(f"{run_dir}: checkpoint folder not found")
    meta = read_model_meta(run_dir)
    arch = meta["architecture"]
    model = build_from_meta(meta)  # an ensemble's members' weights are under members.<i>.
    state = _load_tensors(run_dir / MODEL_WEIGHTS)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(
            f"{run_dir / MODEL_WEIGHTS}: weights do not fit '{arch['name']}' ({str(err).splitlines()[0]})"
        ) from None
    return model.eval(), meta


def save_state(run_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the resumable training state (tensors first, then the JSON that makes them valid).

    The metadata is also embedded in ``state.safetensors``, so a process killed between the two
    writes cannot leave new tensors paired with the previous epoch's ``state.json``.
    """
    run_dir = Path(run_dir)
    _save_tensors(run_dir / STATE_TENSORS, tensors, {"state": json.dumps(meta)})
    write_json(run_dir / STATE_META, meta)


def load_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read the training state of a run, or ``None`` when there is none yet."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_META).is_file():
        return None
    meta = json.loads((run_dir / STATE_META).read_text(encoding="utf-8"))
    tensors = _load_tensors(run_dir / STATE_TENSORS)
    with safe_open(str(run_dir / STATE_TENSORS), framework="pt") as fh:
        embedded = (fh.metadata() or {}).get("state")
    return tensors, json.loads(embedded) if embedded else meta


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]
) -> None:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
