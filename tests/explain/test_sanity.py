"""Randomisation check and deletion/insertion curves, by hand and on the quadrant model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass.explain.methods import saliency
from medclass.explain.sanity import deletion_insertion, random_maps, randomisation_check, randomised_copy, spearman
from medclass.models import create_model


def test_spearman_by_hand():
    a = np.arange(16, dtype=float).reshape(1, 4, 4)
    np.testing.assert_allclose(spearman(np.concatenate([a, a]), np.concatenate([a, -a])), [1.0, -1.0])
    assert spearman(a, np.zeros_like(a))[0] == 0


def test_randomised_copy_changes_weights_not_the_original():
    model = create_model("smallcnn", num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = randomised_copy(model, seed=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    w = "features.stage2.0.0.weight"
    assert not torch.equal(twin.state_dict()[w], before[w])


def test_randomisation_check_reports_per_image_correlations():
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=2)
    out = randomisation_check(model, "multiclass", torch.randn(4, 1, 28, 28), [0, 1, 0, 1], "gradcam")
    assert out["spearman"].shape == (4,) and -1 <= out["mean"] <= 1
    assert out["passed"] == (out["mean"] < 0.5)


def test_a_true_map_deletes_faster_and_inserts_faster_than_random(quadrant):
    model, x = quadrant.model(), quadrant.inputs(4)
    maps = saliency(model, "binary", x, [1] * 4, "integrated-gradients")
    true = deletion_insertion(model, "binary", x, [1] * 4, maps)
    rand = deletion_insertion(model, "binary", x, [1] * 4, random_maps(maps.shape))
    assert true["deletion"].shape == (4, 21)
    assert true["deletion_auc"].mean() < rand["deletion_auc"].mean()
    assert true["insertion_auc"].mean() > rand["insertion_auc"].mean()
    np.testing.assert_allclose(true["deletion"][:, 0], rand["deletion"][:, 0])  # same start: the intact image
    assert true["deletion"][:, 0] == pytest.approx(true["insertion"][:, -1])  # and the same image at the end
