"""Model registry and architectures. ``create_model(name, in_chans=1, num_classes=2)`` builds any of them."""

from __future__ import annotations

from medclass.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
