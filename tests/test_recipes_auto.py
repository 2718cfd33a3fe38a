"""``--recipe auto``: the recipe chosen from the data's shape, and that it names a shipped recipe."""

from __future__ import annotations

import pytest

from medclass.config import build_config, find_recipe, list_recipes
from medclass.data.sources import load_npz
from medclass.recipes import HIRES_MIN_SIZE, auto_recipe


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"size": 28}, "default"),  # MedMNIST 28 px
        ({"size": 28, "task": "multiclass", "channels": 3}, "multiclass"),  # HAM10000 at 28 px
        ({"size": 28, "task": "multilabel"}, "default"),
        ({"size": HIRES_MIN_SIZE - 1}, "default"),
        ({"size": HIRES_MIN_SIZE}, "hires"),  # MedNIST, chest X-ray folders at 64 px
        ({"size": 96, "task": "multiclass"}, "hires"),
        ({"size": 64, "depth": 64}, "default"),  # 3D volumes keep the 3D small CNN
        ({"size": 28, "depth": 28, "task": "multiclass"}, "default"),
        ({"size": 28, "depth": 28}, "default"),
    ],
)
def test_auto_recipe_from_shape(tmp_path, make_npz, kwargs, expected):
    ds = load_npz(make_npz(tmp_path / "d.npz", sizes=(6, 3, 3), **kwargs))
    chosen = auto_recipe(ds)
    assert chosen == expected
    assert chosen in list_recipes() and find_recipe(chosen).is_file()
    build_config(recipe=chosen)  # validates


def test_recipes_are_a_package_with_yaml_beside_it():
    import medclass.recipes as recipes

    assert {"default", "best", "hires", "multiclass"} <= set(list_recipes())
    assert find_recipe("default").parent.name == "recipes"
    assert callable(recipes.auto_recipe)


def test_no_shipped_recipe_weights_multiclass_classes():
    """Multi-class decisions are an argmax; class weights cost ACC there (BENCHMARKS.md "multiclass")."""
    for name in ("default", "best", "hires", "multiclass"):
        optim = build_config(recipe=name).optim
        assert optim.class_weight_multiclass is False or optim.class_weight is None, name


def test_multiclass_recipe_is_the_default_trained_longer():
    default, multi = build_config(recipe="default"), build_config(recipe="multiclass")
    assert multi.train.epochs > default.train.epochs
    assert (multi.model, multi.augment, multi.optim) == (default.model, default.augment, default.optim)
