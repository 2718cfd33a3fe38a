"""Saliency maps for any medclass model: Grad-CAM, Grad-CAM++, Score-CAM, integrated gradients, occlusion.

The CAM methods come from pytorch-grad-cam (Gildenblat et al.), integrated gradients and occlusion
from Captum; both are imported only when a map is asked for. Every method sees the model through
:class:`ClassScores`, which gives one score per class for every task, so the target class means the
same thing everywhere: a binary head's single logit ``z`` becomes ``[-z, z]`` (explaining
"normal" really explains the negative class, a known trap when a binary head is passed as is),
multi-label heads give one sigmoid logit per label, multi-class heads their logits.

Maps are returned per image, scaled to ``[0, 1]``, with the input's spatial shape (volumes give one
value per voxel, so per-slice maps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medclass.errors import ModelError

METHODS = ("gradcam", "gradcam++", "scorecam", "integrated-gradients", "occlusion")


class ClassScores(nn.Module):
    """``(B, C, ...)`` -> ``(B, K)`` one score per class (binary: ``[-z, z]``)."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x).float()
        return torch.cat([-out, out], dim=1) if self.task == "binary" else out


def _networks(model: nn.Module) -> list[nn.Module]:
    """The members of an ensemble (:class:`~medclass.trust.ensemble.ProbabilityAverage`), else the model itself."""
    members = getattr(model, "members", None)
    return list(members) if isinstance(members, nn.ModuleList) else [model]


def cam_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose activations CAM methods use: the model's ``default_cam_layer``, or each member's.

    For an ensemble the map is computed at every member's layer against the averaged output, and the
    members' maps are averaged.
    """
    return [cam_layer(m) for m in _networks(model)]


def cam_layer(model: nn.Module) -> nn.Module:
    """The module whose activations CAM methods use: the model's ``default_cam_layer``."""
    name = getattr(model, "default_cam_layer", "")
    if not name:
        raise ModelError(f"{type(model).__name__} names no default_cam_layer; use integrated-gradients or occlusion")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ModelError(f"{type(model).__name__}: default_cam_layer '{name}' is not a module of it") from None


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    out = np.where(hi > lo, (flat - lo) / np.maximum(hi - lo, 1e-12), 0.0)
    return out.reshape(maps.shape).astype(np.float32)


def _token_grid(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """For vision transformers: tokens ``(B, prefix + h*w, C)`` -> a feature map ``(B, C, h, w)``."""
    patch = model.patch_embed.patch_size
    h, w = x.shape[-2] // patch[0], x.shape[-1] // patch[1]
    prefix = int(getattr(model, "num_prefix_tokens", 1))

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:  # a convolutional member's map in an ensemble with transformers
            return tokens
        grid = tokens[:, prefix:, :].reshape(tokens.shape[0], h, w, tokens.shape[-1])
        return grid.permute(0, 3, 1, 2)

    return reshape


@functools.cache
def _score_cam_class() -> type:
    """ScoreCAM for 2D and 3D inputs (the library's upsamples in 2D only), without a progress bar."""
    from pytorch_grad_cam import ScoreCAM

    class NdScoreCAM(ScoreCAM):
        batch_size = 64

        def get_cam_weights(
            self,
            input_tensor: torch.Tensor,
            target_layer: nn.Module,
            targets: list[Callable[[torch.Tensor], torch.Tensor]],
            activations: np.ndarray,
            grads: np.ndarray | None,
        ) -> np.ndarray:
            """Softmax over channels of the target score when the input is masked by each channel's map.

            ``activations`` ``(B, K, *spatial')`` are upsampled to the input's size and scaled to [0, 1]
            per channel; each of the K masked inputs ``(C, *spatial)`` is scored by the model.
            """
            with torch.no_grad():
                acts = torch.from_numpy(activations).to(input_tensor.device)
                mode = "bilinear" if acts.ndim == 4 else "trilinear"
                masks = nn.functional.interpolate(acts, size=input_tensor.shape[2:], mode=mode, align_corners=True)
                flat = masks.flatten(2)
                low, high = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
                masks = ((flat - low) / (high - low + 1e-8)).view_as(masks)  # each channel's map in [0, 1]
                scores = []
                for image, mask, target in zip(input_tensor, masks, targets, strict=True):
                    for i in range(0, len(mask), self.batch_size):
                        masked = image[None] * mask[i : i + self.batch_size, None]  # (k, C, *spatial)
                        scores += [float(target(out)) for out in self.model(masked)]
                scores_t = torch.tensor(scores).view(activations.shape[:2])
                return torch.softmax(scores_t, dim=-1).numpy()

    return NdScoreCAM


def _cam(model: nn.Module, task: str, x: torch.Tensor, targets: Sequence[int], method: str) -> np.ndarray:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}.get(method) or _score_cam_class()
    wrapped = ClassScores(model, task).eval()
    vit = next((m for m in _networks(model) if hasattr(m, "patch_embed")), None)
    reshape = _token_grid(vit, x) if vit is not None else None
    with cls(model=wrapped, target_layers=cam_layers(model), reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(maps, dtype=np.float32)


def _captum(model: nn.Module, task: str, x: torch.Tensor, targets: Sequence[int], method: str) -> np.ndarray:
    from captum.attr import IntegratedGradients, Occlusion

    wrapped = ClassScores(model, task).eval()
    target = torch.as_tensor([int(t) for t in targets])
    baseline = torch.full_like(x, float(x.min()))  # the darkest value: "no tissue"
    if method == "integrated-gradients":
        attr = IntegratedGradients(wrapped).attribute(x, baselines=baseline, target=target, n_steps=32)
        return attr.abs().sum(1).detach().numpy()  # magnitude, summed over channels
    side = max(2, min(x.shape[2:]) // 7)
    window = (x.shape[1],) + (side,) * (x.ndim - 2)
    strides = (x.shape[1],) + (max(1, side // 2),) * (x.ndim - 2)
    attr = Occlusion(wrapped).attribute(
        x, sliding_window_shapes=window, strides=strides, baselines=baseline, target=target
    )
    return attr.sum(1).clamp(min=0).detach().numpy()  # evidence for the target: where hiding lowers its score


def saliency(
    model: nn.Module, task: str, x: torch.Tensor, targets: Sequence[int], method: str = "gradcam"
) -> np.ndarray:
    """Maps ``(B, *spatial)`` in ``[0, 1]`` of how much each pixel supports each image's target class.

    Args:
        model: The network (put in eval mode).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        x: Normalised model input ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        targets: One class (or label) index per image (binary: 0 or 1, the class index, whichever is positive).
        method: One of :data:`METHODS`.

    Raises:
        ModelError: An unknown method, or a CAM method on a model without a CAM layer.
    """
    if method not in METHODS:
        raise ModelError(f"unknown explanation method '{method}' (use {', '.join(METHODS)})")
    if method != "occlusion" and not any(p.requires_grad for p in model.parameters()):
        raise ModelError(f"{type(model).__name__} has no gradients (a classical model?); use --method occlusion")
    model.eval()
    x = x.detach().contiguous().requires_grad_(False)
    fn = _cam if method in ("gradcam", "gradcam++", "scorecam") else _captum
    with torch.enable_grad():
        maps = fn(model, task, x, targets, method)
    return _normalise(maps)


def default_targets(probs: np.ndarray, task: str, threshold: object = None, *, positive_index: int = 1) -> np.ndarray:
    """The class to explain for each image when none is given: the decision (multi-label: the likeliest label).

    Binary decisions use the operating threshold on P(positive) (the checkpoint's ``positive_index``), so a
    case called positive is explained as positive.
    """
    if task == "binary":
        from medclass.metrics.positive import binary_decision

        t = 0.5 if threshold is None else float(threshold)  # type: ignore[arg-type]
        return binary_decision(probs, t, positive_index)
    return probs.argmax(1)
