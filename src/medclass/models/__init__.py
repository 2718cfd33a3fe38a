"""Model registry and architectures. ``create_model(name, in_chans=1, num_classes=2)`` builds any of them.

:func:`build_model` and :func:`build_from_meta` build the network a checkpoint's ``model.json`` describes.
"""

from __future__ import annotations

from medclass.models.build import build_from_meta, build_model, member_architectures
from medclass.models.registry import create_model, list_models, model_info, register_model

__all__ = [
    "build_from_meta",
    "build_model",
    "create_model",
    "list_models",
    "member_architectures",
    "model_info",
    "register_model",
]
