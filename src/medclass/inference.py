"""Running a trained network on ``uint8`` images: normalisation, batched forward passes, probabilities.

Shared by the trainer's validation, :class:`~medclass.predict.Predictor`, evaluation, explanations
and the service, so that every path turns pixels into model input the same way; none of them needs
the trainer for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medclass.data.mapped import release
from medclass.tasks import logits_to_probs
from medclass.transforms.histogram import apply_equalize
from medclass.transforms.tta import iter_tta_views
from medclass.trust.scaling import apply_calibration

if TYPE_CHECKING:
    from medclass.data.dataset import Split


def to_input(images: torch.Tensor, prep: dict[str, Any]) -> torch.Tensor:
    """``uint8`` ``(B, C, ...)`` -> normalised float32 model input (channels-last memory layout).

    Applies the stored contrast equalisation (``prep["equalize"]``) first, when there is one.

    Args:
        images: ``uint8`` ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        prep: The checkpoint's preprocessing: ``scale``, per-channel ``mean`` and ``std``, optional ``equalize``.

    Returns:
        float32 of the same shape, ``(images * scale - mean) / std``.
    """
    images = apply_equalize(images, prep.get("equalize"))
    c = images.shape[1]
    shape = (1, c) + (1,) * (images.ndim - 2)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(shape)
    x = (images.float() * prep["scale"] - mean) / std
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return x.contiguous(memory_format=fmt)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live (its first parameter, else its first buffer; the CPU when it has neither)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def split_tabular(prep: dict[str, Any], split: Split) -> torch.Tensor | None:
    """A split's clinical fields encoded by the checkpoint's schema (``prep["tabular"]``), ``float32`` ``(N, T)``.

    ``None`` when the model takes no clinical fields; every field missing when the split carries none.
    """
    spec = prep.get("tabular")
    if not spec:
        return None
    from medclass.data.tabular import TabularSchema

    return torch.from_numpy(TabularSchema.from_json(spec).transform(split.tabular, n=len(split)))


EVAL_PIXELS = {2: 1 << 20, 3: 1 << 22}
"""Most pixels (per channel) in one evaluation batch, by spatial dimensions: 20 images at 224 px, 256 at 64 px,
16 volumes at 64^3.

Measured on a 2-core CPU (``smallcnn_hr`` at 224 px, RGB): 20-image batches ran 72 images/s against 62-71 for 41
or 83, with a peak resident memory of 718 MB against 1000. Volumes keep the larger cap: 3D networks carry about
one activation per voxel at their stem (2D ones about eight per pixel), and 4-volume batches at 64^3 ran 30%
slower than 16-volume ones.
"""


def eval_batch(batch_size: int, spatial: Sequence[int]) -> int:
    """``batch_size`` capped so that one evaluation batch holds at most :data:`EVAL_PIXELS` pixels.

    Activations grow with the image: a batch of 512 at 224 px needs 0.8 GB for a single 32-channel map at half
    resolution, which put evaluation, not training, at the top of a run's memory.
    """
    cap = EVAL_PIXELS[3 if len(spatial) >= 3 else 2]
    return max(1, min(batch_size, cap // max(1, math.prod(int(s) for s in spatial))))


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    prep: dict[str, Any],
    batch_size: int = 512,
    *,
    tabular: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``(N, outputs)`` for a ``uint8`` image stack ``(N, C, ...)``, in evaluation mode.

    With ``prep["tta"]`` (test-time augmentation views), the mean of the views' logits. Batches run
    on the model's device; the logits come back on the CPU. ``tabular`` (``(N, T)`` encoded clinical fields,
    :func:`split_tabular`) goes to a fusion model beside the images.
    """
    model.eval()
    device = model_device(model)
    views = prep.get("tta") or []
    batch_size = eval_batch(batch_size, images.shape[2:])
    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = to_input(images[i : i + batch_size], prep).to(device, non_blocking=True)
        release(images)  # a memory-mapped stack: its pages need not stay resident
        fields = () if tabular is None else (tabular[i : i + batch_size].to(device, non_blocking=True),)
        if views:
            scores = [0.0, 0]  # running sum of the views' logits, and their count: one view in memory at a time
            for v in iter_tta_views(x, views):
                scores = [scores[0] + model(v, *fields).float(), scores[1] + 1]
            outs.append((scores[0] / scores[1]).cpu())
        else:
            outs.append(model(x, *fields).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def predict_probs(
    model: nn.Module,
    images: torch.Tensor,
    task: str,
    prep: dict[str, Any],
    batch_size: int = 512,
    *,
    calibration: dict[str, Any] | None = None,
    tabular: torch.Tensor | None = None,
) -> np.ndarray:
    """Probabilities ``(N, K)`` (K = 2 for binary) for a ``uint8`` image stack.

    Args:
        model: The network.
        images: ``uint8`` ``(N, C, ...)``.
        task: Task type.
        prep: The checkpoint's preprocessing (with optional ``tta`` views).
        batch_size: Inference batch size.
        calibration: The checkpoint's fitted calibration (temperature or vector scaling), applied
            to the logits; ``None`` leaves them as they are.
        tabular: ``(N, T)`` encoded clinical fields for a fusion model.
    """
    logits = predict_logits(model, images, prep, batch_size, tabular=tabular)
    if logits.numel() == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return logits_to_probs(apply_calibration(logits, calibration), task).numpy()
