"""``--set`` items and keyword overrides (:mod:`medclass.config_overrides`), as :func:`build_config` applies them."""

from __future__ import annotations

import pytest

from medclass.config import build_config
from medclass.config_overrides import NULL, drop_none, parse_set, put_dotted
from medclass.errors import ConfigError


def test_parse_set_reads_values_as_yaml():
    got = parse_set(
        [
            "train.epochs=3",
            "optim.lr=0.5",
            "augment.hflip=true",
            "optim.class_weight=null",
            "eval.tta=[hflip, shift]",
            "model.name=timm/resnet10t",
            "per_modality.ct.train.epochs=4",
            "train.epochs=5",  # a later item wins
            "data.window= ",
        ]
    )
    assert got == {
        "train": {"epochs": 5},
        "optim": {"lr": 0.5, "class_weight": None},
        "augment": {"hflip": True},
        "eval": {"tta": ["hflip", "shift"]},
        "model": {"name": "timm/resnet10t"},
        "per_modality": {"ct": {"train": {"epochs": 4}}},
        "data": {"window": None},
    }
    assert parse_set([]) == {}
    cfg = build_config(recipe="default", overrides=parse_set(["train.precision=fp32", "augment.rotate=3"]))
    assert cfg.train.precision == "fp32" and cfg.augment.rotate == 3.0


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("train.epochs", r"^--set 'train\.epochs': expected SECTION\.KEY=VALUE"),
        ("epochs=3", r"^--set 'epochs=3': expected SECTION\.KEY=VALUE"),
        ("train.=3", r"^--set 'train\.=3': expected"),
        ("eval.tta=[hflip", r"^--set 'eval\.tta=\[hflip': invalid value"),
    ],
)
def test_parse_set_errors_name_the_item(item, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_set(["train.seed=1", item])
    assert "\n" not in str(err.value)


def test_parse_set_leaves_unknown_keys_and_bad_values_to_build_config():
    with pytest.raises(ConfigError, match=r"command line\.train: unknown key 'epoch'"):
        build_config(recipe=None, overrides=parse_set(["train.epoch=3"]))
    with pytest.raises(ConfigError, match=r"command line\.train\.select_metric: 'aucc' is not one of auc, acc, loss"):
        build_config(recipe=None, overrides=parse_set(["train.select_metric=aucc"]))
    with pytest.raises(ConfigError, match=r"--set 'train\.epochs\.x=1': 'train\.epochs' is a value, not a section"):
        parse_set(["train.epochs=3", "train.epochs.x=1"])


def test_drop_none_skips_what_was_not_given_and_keeps_an_explicit_null():
    given = {"train": {"epochs": None, "max_minutes": NULL}, "optim": {"lr": None}, "model": {"name": "smallcnn"}}
    assert drop_none(given) == {"train": {"max_minutes": None}, "model": {"name": "smallcnn"}}
    recipe = build_config(recipe="default")
    assert recipe.optim.class_weight == "balanced"
    cfg = build_config(recipe="default", overrides={"optim": {"class_weight": NULL, "lr": None}})
    assert cfg.optim.class_weight is None and cfg.optim.lr == recipe.optim.lr


def test_put_dotted_makes_sections_and_refuses_to_descend_into_a_value():
    tree: dict = {}
    put_dotted(tree, "augment.rotate", 5)
    put_dotted(tree, ["per_modality", "ct", "train", "epochs"], 2)
    assert tree == {"augment": {"rotate": 5}, "per_modality": {"ct": {"train": {"epochs": 2}}}}
    with pytest.raises(ConfigError, match=r"^augment\.rotate\.x: 'augment\.rotate' is a value, not a section$"):
        put_dotted(tree, "augment.rotate.x", 1)
