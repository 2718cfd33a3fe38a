"""Transfer learning: start from other weights, freeze what should not move, and scale learning rates by depth.

* :func:`load_matching` copies every tensor whose name and shape fit (the head of another task
  never fits and stays freshly initialised); a first convolution trained on RGB is adapted to grey
  input by summing its colour filters (and a grey one to RGB by sharing it out), so ImageNet or
  medical weights serve any channel count.
* :func:`pretrained_source` finds weights offline: an explicit ``model.weights`` file, else
  ``$MEDCLASS_WEIGHTS_DIR/<architecture>.safetensors``; without one, :func:`hub_weights` takes the
  ImageNet weights of the model's timm architecture from timm's hub (or its cache). ``model.init_from``
  names a medclass run.
* :func:`freeze_backbone` turns training into a linear probe, :func:`gradual_unfreeze` opens the
  layers one by one from the top; :func:`layer_decay_groups` gives earlier layers smaller learning
  rates (layer-wise learning-rate decay).

Weights are read from safetensors only: never unpickled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medclass.errors import ModelError

WEIGHTS_DIR_ENV = "MEDCLASS_WEIGHTS_DIR"
log = logging.getLogger(__name__)


def _adapt_input_conv(src: torch.Tensor, dst_shape: torch.Size) -> torch.Tensor | None:
    """A first-layer kernel ``(O, I, k...)`` reshaped to another input-channel count, or None.

    As timm adapts ImageNet weights: one input channel takes the sum of the source's filters; any
    other count repeats them in turn (cropped to that count) scaled by ``I / I_dst``, which keeps the
    response to an image whose channels are equal.
    """
    if src.ndim < 3 or src.shape[0] != dst_shape[0] or src.shape[2:] != dst_shape[2:]:
        return None
    i_src, i_dst = src.shape[1], dst_shape[1]
    if i_dst == 1:
        return src.sum(dim=1, keepdim=True)
    repeats = -(-i_dst // i_src)
    return src.repeat(1, repeats, *([1] * (src.ndim - 2)))[:, :i_dst] * (i_src / i_dst)


def load_matching(model: nn.Module, tensors: dict[str, torch.Tensor], *, where: str) -> dict[str, list[str]]:
    """Copy the tensors of ``tensors`` that fit ``model`` by name and shape into it.

    Args:
        model: The target network.
        tensors: Source state (e.g. a safetensors file's content).
        where: The source, for messages.

    Returns:
        ``{"loaded": names, "adapted": names, "skipped": names}`` over the model's state entries.

    Raises:
        ModelError: Nothing fits at all (a different architecture).
    """
    state = model.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "adapted": [], "skipped": []}
    new_state = {}
    for name, dst in state.items():
        src = tensors.get(name)
        if src is not None and src.shape == dst.shape:
            new_state[name] = src.to(dst.dtype)
            report["loaded"].append(name)
            continue
        adapted = _adapt_input_conv(src, dst.shape) if src is not None and dst.ndim >= 3 else None
        if adapted is not None:
            new_state[name] = adapted.to(dst.dtype)
            report["adapted"].append(name)
        else:
            report["skipped"].append(name)
    weights = [n for n, t in state.items() if t.is_floating_point()]
    if not any(n in new_state for n in weights):
        raise ModelError(f"{where}: no weights fit this model (different architecture?)")
    model.load_state_dict(new_state, strict=False)
    return report


def start_from(model: nn.Module, source: str | Path, *, what: str = "initialised") -> dict[str, list[str]]:
    """Copy the weights of ``source`` (a run folder or safetensors file) that fit ``model`` into it, and log it.

    Returns:
        :func:`load_matching`'s report.
    """
    report = load_matching(model, read_weights(source), where=str(source))
    log.info(
        "%s from %s: %d tensors loaded, %d adapted, %d new",
        what,
        source,
        len(report["loaded"]),
        len(report["adapted"]),
        len(report["skipped"]),
    )
    return report


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict; a medclass run folder gives its ``model.safetensors``.

    A deep-ensemble run (``train.ensemble``) gives its first member's weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a valid safetensors file ({err})") from None
    if any(k.startswith("members.") for k in tensors):  # a deep-ensemble run: start from its first member
        tensors = {k.removeprefix("members.0."): v for k, v in tensors.items() if k.startswith("members.0.")}
    return tensors


def pretrained_source(model_name: str, weights: str | None) -> Path | None:
    """The local pretrained-weights file for ``model_name``: ``weights``, else one in ``$MEDCLASS_WEIGHTS_DIR``.

    For ``timm/resnet18`` the folder is searched for ``resnet18.safetensors`` and
    ``timm_resnet18.safetensors``. Returns None when no local file exists (:func:`hub_weights`
    then asks timm's hub, which needs internet or its cache).
    """
    if weights:
        return Path(weights)
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    arch = model_name.split("/", 1)[-1]
    for candidate in (f"{arch}.safetensors", f"{model_name.replace('/', '_')}.safetensors"):
        if (Path(folder) / candidate).is_file():
            return Path(folder) / candidate
    return None


def local_weights_path(model_name: str) -> str:
    """Where :func:`pretrained_source` looks first for ``model_name``'s weights, for messages.

    ``$MEDCLASS_WEIGHTS_DIR/<arch>.safetensors`` with the folder spelled out when the variable is set.
    """
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    name = f"{model_name.split('/', 1)[-1]}.safetensors"
    return str(Path(folder) / name) if folder else f"${WEIGHTS_DIR_ENV}/{name}"


def timm_architecture(model_name: str) -> str | None:
    """The timm architecture whose ImageNet weights ``model_name`` starts from, or None when there is none.

    ``timm/<arch>`` is ``<arch>``; a registered model is its registry entry's ``timm_arch``
    (``densenet121``, ``vit_tiny`` -> ``vit_tiny_patch16_224``, ...); ``classical/`` models have none.
    """
    if model_name.lower().startswith("timm/"):
        return model_name[5:]
    if model_name.lower().startswith("classical/"):
        return None
    from medclass.models.registry import model_info

    return model_info(model_name).timm_arch or None


def hub_weights(model_name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``model_name`` from timm's hub: downloaded once, then read from timm's cache.

    The state dict of ``timm.create_model(arch, pretrained=True)`` (3 input channels, ImageNet's
    head); :func:`load_matching` then copies what fits and adapts the first convolution.

    Raises:
        ConfigError: The model has no ImageNet weights, or they cannot be fetched (offline, no
            cache): one line naming the local file to provide instead.
    """
    from medclass.errors import ConfigError

    arch = timm_architecture(model_name)
    local = local_weights_path(model_name)
    if arch is None:
        raise ConfigError(
            f"model.pretrained: no weights for '{model_name}' (it has no ImageNet weights): "
            f"put a safetensors file at {local} or set model.weights"
        )
    import timm

    try:
        donor = timm.create_model(arch, pretrained=True)
    except Exception as err:  # noqa: BLE001 - a download fails in many ways (HTTP, DNS, proxy, cache, disk)
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise ConfigError(
            f"model.pretrained: cannot download the ImageNet weights of '{model_name}' (timm '{arch}': {reason}); "
            f"offline, save them as {local} (or set model.weights to a safetensors file)"
        ) from None
    return donor.state_dict()


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters (``get_classifier()``, which medclass and timm models have)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        raise ModelError(f"{type(model).__name__} has no get_classifier(); cannot freeze its backbone")
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def freeze_backbone(model: nn.Module) -> int:
    """Train only the classifier (a linear probe). Returns the number of trainable parameters left.

    Batch-norm statistics of the frozen backbone still update in ``train()`` mode unless the caller
    keeps those layers in eval mode; the loop does (see :func:`set_frozen_eval`).
    """
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_frozen_eval(model: nn.Module) -> None:
    """Put norm layers whose parameters are all frozen in eval mode (their running stats stay fixed)."""
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            m.eval()


def layer_keys(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """The model's layers from input to output, and the layer of each parameter.

    Layers are the top-level blocks in definition order (the second name component inside a
    ``features``/``stages``/``layers``-style container, e.g. ``features.stage2``); the classifier's
    parameters belong to ``"head"``, which is not in the returned list.

    Returns:
        ``(layers, layer_of_parameter_name)``.
    """
    head = head_parameter_names(model)
    keys: list[str] = []
    key_of: dict[str, str] = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        key = "head" if name in head else ".".join(parts[:2] if len(parts) > 2 else parts[:1])
        key_of[name] = key
        if key != "head" and key not in keys:
            keys.append(key)
    return keys, key_of


def layer_decay_groups(model: nn.Module, decay: float) -> list[dict[str, Any]]:
    """Parameter groups whose ``lr_scale`` shrinks by ``decay`` per layer (:func:`layer_keys`) from the head backwards.

    The head gets scale 1. Groups also split weight-decayed weights from biases and norm
    parameters (``no_decay``); frozen parameters are left out.

    Returns:
        ``[{"params", "lr_scale", "no_decay"}]``.
    """
    all_keys, key_of = layer_keys(model)
    trainable = {key_of[n] for n, p in model.named_parameters() if p.requires_grad}
    keys = [k for k in all_keys if k in trainable]
    depth = {k: i for i, k in enumerate(keys)}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = key_of[name]
        scale = 1.0 if key == "head" else decay ** (len(keys) - depth[key])
        g = groups.setdefault((key, p.ndim <= 1), {"params": [], "lr_scale": scale, "no_decay": p.ndim <= 1})
        g["params"].append(p)
    return list(groups.values())


def gradual_unfreeze(model: nn.Module, epoch: int, every: float) -> list[str]:
    """Gradual unfreezing (Howard and Ruder 2018): set which layers train in ``epoch`` (0-based).

    The head trains from the start; one more layer, from the top down, joins every ``every``
    epochs, until all train. The optimiser holds every parameter from the start (frozen ones have no
    gradient, so it leaves them untouched). Call before each epoch; resuming gives the same state.

    Returns:
        The layers (:func:`layer_keys`) frozen in this epoch, input side first.
    """
    keys, key_of = layer_keys(model)
    n_open = min(len(keys), int(epoch // max(every, 1e-9)))
    frozen = keys[: len(keys) - n_open]
    for name, p in model.named_parameters():
        p.requires_grad_(key_of[name] not in frozen)
    return frozen
