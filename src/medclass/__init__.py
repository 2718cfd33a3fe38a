"""medclass: medical image classification on a plain CPU.

The public API, loaded on first use (``import medclass`` itself imports nothing heavy)::

    run = medclass.train("breastmnist", epochs=1)      # a calibrated, thresholded run folder
    predictor = medclass.load(run.path)                # predict_proba(images) -> (N, C)
    enc = medclass.pretrain("pneumoniamnist", "simclr")  # an encoder from unlabelled images; train(init_from=enc.path)
    model = medclass.create_model("resnet18_28", in_chans=1, num_classes=2)
    medclass.list_models("vit*"); medclass.load_dataset("pneumoniamnist")
"""

from __future__ import annotations

import logging
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "Predictor",
    "Run",
    "__version__",
    "create_model",
    "federate",
    "federate_client",
    "federate_server",
    "list_models",
    "load",
    "load_dataset",
    "pretrain",
    "probe",
    "train",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "train": "medclass.api",
    "federate": "medclass.api",
    "federate_client": "medclass.api",
    "federate_server": "medclass.api",
    "load": "medclass.api",
    "pretrain": "medclass.api",
    "probe": "medclass.api",
    "Run": "medclass.api",
    "Predictor": "medclass.predict",
    "create_model": "medclass.models",
    "list_models": "medclass.models",
    "load_dataset": "medclass.data.sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medclass' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
