"""Saliency methods on a model whose answer is known, on every registered family, with binary targets done right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from medclass.errors import ModelError
from medclass.explain.methods import (
    METHODS,
    ClassScores,
    _normalise,
    _token_grid,
    cam_layers,
    default_targets,
    saliency,
)
from medclass.models import create_model


def test_binary_scores_are_minus_z_and_z(quadrant):
    model = quadrant.model().eval()
    x = quadrant.inputs()
    z = model(x)
    assert torch.allclose(ClassScores(model, "binary")(x), torch.cat([-z, z], 1))
    assert torch.equal(ClassScores(model, "multiclass")(x), z)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_maps_point_at_the_only_region_the_model_uses(method, dims, quadrant):
    size = 16 if dims == 2 else 8
    x = quadrant.inputs(size=size, dims=dims)
    maps = saliency(quadrant.model(size, dims), "binary", x, [1, 1, 1], method)
    assert maps.shape == (3, *(size,) * dims) and maps.min() >= 0 and maps.max() <= 1
    half = size // 2
    inside, outside = maps[(..., *(slice(0, half),) * dims)].mean(), maps[(..., *(slice(half, None),) * dims)].mean()
    assert inside > 0.2 and inside > 5 * outside, (inside, outside)


@pytest.mark.parametrize("name", ["smallcnn", "vit_tiny"])
def test_score_cam_equals_the_library_s_in_2d(name):
    """Our N-d ScoreCAM (the library's upsamples in 2D only) gives the library's maps on 2D inputs."""
    from pytorch_grad_cam import ScoreCAM

    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=3, **({"img_size": 28} if name == "vit_tiny" else {}))
    x = torch.randn(2, 1, 28, 28)
    ours = saliency(model, "multiclass", x, [0, 2], "scorecam")
    reshape = _token_grid(model, x) if name == "vit_tiny" else None
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(2)]
    wrapped = ClassScores(model, "multiclass").eval()
    with ScoreCAM(model=wrapped, target_layers=cam_layers(model), reshape_transform=reshape) as cam:
        cam.batch_size = 64
        reference = _normalise(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32))
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_the_negative_class_of_a_binary_head_is_explained_as_such(quadrant):
    x = quadrant.inputs()
    positive = saliency(quadrant.model(), "binary", x, [1, 1, 1], "gradcam")
    negative = saliency(quadrant.model(), "binary", x, [0, 0, 0], "gradcam")
    # Bright pixels in the quadrant argue for the positive class, dark ones for the negative: the two
    # maps cover disjoint pixels (a head passed as is would give the positive map for both).
    assert positive.max() == pytest.approx(1.0) and negative.max() == pytest.approx(1.0)
    assert (positive * negative).max() == 0
    x_np = x[:, 0].numpy()
    assert (x_np[positive > 0] > 0).all() and (x_np[negative > 0] < 0).all()


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("smallcnn", {"in_chans": 1}, (2, 1, 28, 28)),
        ("smallcnn", {"in_chans": 3}, (2, 3, 28, 28)),
        ("smallcnn_hr", {"in_chans": 1}, (2, 1, 64, 64)),
        ("resnet18_28", {"in_chans": 1}, (2, 1, 28, 28)),
        ("timm/resnet18", {"in_chans": 1}, (2, 1, 64, 64)),
        ("vit_tiny", {"in_chans": 1, "img_size": 28}, (2, 1, 28, 28)),
        ("efficientnet_b0", {"in_chans": 3}, (2, 3, 32, 32)),
        ("capsnet", {"in_chans": 1, "img_size": 28}, (2, 1, 28, 28)),
        ("hybrid_cnn_vit", {"in_chans": 1}, (2, 1, 28, 28)),
        ("shallow_cnn", {"in_chans": 1}, (2, 1, 28, 28)),
        ("smallcnn", {"in_chans": 1, "spatial_dims": 3}, (2, 1, 16, 16, 16)),
    ],
)
@pytest.mark.parametrize("method", ["gradcam", "integrated-gradients"])
def test_every_family_and_volumes(name, kwargs, shape, method):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **kwargs)
    maps = saliency(model, "multiclass", torch.randn(shape), [0, 2], method)
    assert maps.shape == (shape[0], *shape[2:]) and np.isfinite(maps).all()


def test_errors_and_default_targets(quadrant):
    with pytest.raises(ModelError, match="unknown explanation method 'lime'"):
        saliency(quadrant.model(), "binary", quadrant.inputs(), [1, 1, 1], "lime")
    model = quadrant.model()
    model.default_cam_layer = ""
    with pytest.raises(ModelError, match="names no default_cam_layer"):
        saliency(model, "binary", quadrant.inputs(), [1, 1, 1], "gradcam")
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert default_targets(probs, "binary", 0.25).tolist() == [1, 1]  # the operating threshold decides
    assert default_targets(probs, "multiclass").tolist() == [0, 1]
