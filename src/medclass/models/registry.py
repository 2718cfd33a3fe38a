"""Model registry: ``register_model`` decorates a builder, ``create_model`` builds by name.

Names are lower-case; ``timm/<name>`` builds any timm architecture (random init unless
``pretrained=True``). A name registered twice raises, so one file cannot silently replace another's model.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from medclass.errors import ModelError

# Modules that register models when imported. Adding a model is one new file plus one line here.
_MODEL_MODULES = (
    "medclass.models.resnet",
    "medclass.models.smallcnn",
    "medclass.models.literature",
    "medclass.models.capsule",
    "medclass.models.hybrid",
    "medclass.models.shallow",
)


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model.

    Attributes:
        name: Registry name.
        builder: ``builder(in_chans=..., num_classes=..., **kwargs) -> nn.Module``.
        family: Architecture family (``resnet``, ``cnn`` ...).
        spatial_dims: Supported spatial dimensions, ``(2,)``, ``(3,)`` or ``(2, 3)``; builders of
            models supporting both take a ``spatial_dims`` keyword.
        sizes: Input sizes it is meant for (informational).
        description: One line.
        min_size: Smallest input side it accepts (training refuses smaller images with a clear error).
        timm_arch: The timm architecture behind it, which has ImageNet weights (``""``: none).
        takes_img_size: The builder needs the input size (``img_size``), e.g. vision transformers.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    spatial_dims: tuple[int, ...]
    sizes: tuple[int, ...]
    description: str
    min_size: int = 1
    timm_arch: str = ""
    takes_img_size: bool = False


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(
    name: str,
    *,
    family: str,
    spatial_dims: int | tuple[int, ...] = 2,
    sizes: tuple[int, ...] = (28, 64, 128, 224),
    description: str = "",
    min_size: int = 1,
    timm_arch: str = "",
    takes_img_size: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a model builder to the registry under ``name`` (fields as in :class:`ModelEntry`).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"model '{key}' is already registered")
        dims = (spatial_dims,) if isinstance(spatial_dims, int) else tuple(spatial_dims)
        desc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, fn, family, dims, tuple(sizes), desc, min_size, timm_arch, takes_img_size)
        return fn

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _MODEL_MODULES:
            importlib.import_module(mod)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (``resnet*``), sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def model_info(name: str) -> ModelEntry:
    """The registry entry of ``name`` (ModelError with suggestions when unknown)."""
    _ensure_loaded()
    key = name.lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see 'medclass models'"
        raise ModelError(f"unknown model '{name}'{hint}")
    return _REGISTRY[key]


def _timm_cam_layer(model: nn.Module) -> str:
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return str(last["module"])
    return ""


def build_timm(arch: str, *, in_chans: int, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm model with medclass's contract: ``default_cam_layer`` and ``spatial_dims`` set."""
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ModelError(f"model 'timm/{arch}' needs timm ({err})") from None
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join('timm/' + c for c in close)}?" if close else ""
        raise ModelError(f"unknown timm model '{arch}'{hint}")
    try:
        model = timm.create_model(arch, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes, **kwargs)
    except (RuntimeError, OSError, ValueError) as err:
        raise ModelError(f"cannot build timm model '{arch}': {err}") from None
    model.default_cam_layer = _timm_cam_layer(model)
    model.spatial_dims = 2
    return model


def check_input_size(name: str, size: int) -> None:
    """Raise a clear ConfigError when ``name`` cannot take ``size`` px inputs."""
    from medclass.errors import ConfigError

    if name.lower().startswith(("timm/", "classical/")):
        return
    entry = model_info(name)
    if size < entry.min_size:
        raise ConfigError(
            f"model '{name}' needs inputs of at least {entry.min_size} px, these are {size} px: "
            f"train with --image-size {entry.min_size} or larger (images are resized), or pick another model"
        )


def create_model(
    name: str,
    *,
    in_chans: int = 1,
    num_classes: int = 2,
    pretrained: bool = False,
    spatial_dims: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by registry name or ``timm/<name>``.

    Args:
        name: Registry name (see :func:`list_models`) or ``timm/<architecture>``.
        in_chans: Input channels (1 grey, 3 colour).
        num_classes: Number of outputs.
        pretrained: Load pretrained weights (timm models only; needs them available offline or online).
        spatial_dims: 2 for images, 3 for volumes; ``None`` takes the model's first supported form.
        **kwargs: Passed to the builder (e.g. ``drop_rate``).

    Returns:
        An ``nn.Module`` with ``forward_features``, ``forward_head``, ``reset_classifier`` and ``default_cam_layer``.
    """
    if name.lower().startswith("classical/"):
        if spatial_dims not in (None, 2):
            raise ModelError(f"model '{name}' is 2D only")
        from medclass.classical.model import build_classical

        model = build_classical(name, in_chans=in_chans, num_classes=num_classes, **kwargs)
        model.spatial_dims = 2
        return model
    if name.lower().startswith("timm/"):
        if spatial_dims not in (None, 2):
            raise ModelError(f"model '{name}' is 2D only; for volumes use e.g. smallcnn or resnet18_3d")
        return build_timm(name[5:], in_chans=in_chans, num_classes=num_classes, pretrained=pretrained, **kwargs)
    entry = model_info(name)
    if pretrained and not entry.timm_arch:
        raise ModelError(f"model '{name}' has no pretrained weights; use a timm/<name> model for ImageNet weights")
    if pretrained:
        kwargs["pretrained"] = True
    dims = entry.spatial_dims[0] if spatial_dims is None else spatial_dims
    if dims not in entry.spatial_dims:
        others = [n for n, e in _REGISTRY.items() if e.family == entry.family and dims in e.spatial_dims]
        hint = f"; try {', '.join(others[:3])}" if others else ""
        raise ModelError(f"model '{name}' does not support {dims}D inputs{hint}")
    if len(entry.spatial_dims) > 1:
        kwargs["spatial_dims"] = dims
    model = entry.builder(in_chans=in_chans, num_classes=num_classes, **kwargs)
    model.spatial_dims = dims
    return model
