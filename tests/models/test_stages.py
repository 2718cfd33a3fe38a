"""Stage lists: the same answer for medclass's own families and for timm models, and none for models without."""

from __future__ import annotations

import pytest
from torch import nn

from medclass.models import create_model
from medclass.models.stages import stage_names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smallcnn", ["features.stage1", "features.stage2", "features.stage3"]),
        ("smallcnn_hr", ["features.stage1", "features.stage2", "features.stage3"]),
        ("resnet18_28", ["features.layer1", "features.layer2", "features.layer3", "features.layer4"]),
        ("timm/resnet18", ["layer1", "layer2", "layer3", "layer4"]),
    ],
)
def test_stages_are_listed_in_order_after_the_stem(name, expected):
    model = create_model(name, in_chans=1, num_classes=2)
    assert stage_names(model) == expected
    assert all(isinstance(model.get_submodule(path), nn.Module) for path in expected)


def test_a_model_that_lists_no_stages_gives_none():
    assert stage_names(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())) == []
