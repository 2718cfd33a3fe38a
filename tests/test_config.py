"""Run configuration: defaults, recipe, config file and overrides in layers; strict keys and types; YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medclass.config import (
    RunConfig,
    build_config,
    config_from_dict,
    dump_yaml,
    find_recipe,
    list_recipes,
    read_yaml,
)
from medclass.errors import ConfigError


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_recipe():
    cfg = build_config(recipe=None)
    assert cfg == RunConfig() and cfg.recipe is None
    assert cfg.train.epochs == 20 and cfg.model.name == "smallcnn"


def test_layers_recipe_then_file_then_overrides(tmp_path):
    recipe = yaml.safe_load(find_recipe("default").read_text())
    user = _yaml(tmp_path / "user.yaml", "optim:\n  lr: 0.01\ntrain:\n  epochs: 5\n  batch_size: 32\n")
    cfg = build_config(
        recipe="default",
        config_file=user,
        overrides={"train": {"epochs": 7, "seed": None}, "model": {"name": None}, "data": {"spec": "x.npz"}},
    )
    assert cfg.recipe == "default"
    assert cfg.train.epochs == 7  # override beats file beats recipe
    assert cfg.train.batch_size == 32 and cfg.optim.lr == 0.01  # file beats recipe
    assert cfg.train.ema == recipe["train"]["ema"] and cfg.augment.enabled is True  # recipe beats defaults
    assert cfg.train.seed == 0 and cfg.model.name == "smallcnn"  # None overrides are skipped
    assert cfg.data.spec == "x.npz"
    assert cfg.optim.name == "adamw" and cfg.eval.n_bootstrap == 1000  # untouched defaults


def test_recipe_by_path_and_by_folder(tmp_path, monkeypatch):
    path = _yaml(tmp_path / "mine.yaml", "train:\n  epochs: 3\n")
    assert build_config(recipe=str(path)).train.epochs == 3
    monkeypatch.setenv("MEDCLASS_RECIPES_DIR", str(tmp_path))
    assert find_recipe("mine") == path
    assert build_config(recipe="mine").train.epochs == 3
    assert {"default", "mine"} <= set(list_recipes())


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'.*default"):
        build_config(recipe="nope")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train:\n  epochz: 3\n", r"typo\.yaml\.train: unknown key 'epochz'"),
        ("trian:\n  epochs: 3\n", r"typo\.yaml: unknown key 'trian'"),
        ("train: 5\n", r"typo\.yaml\.train: expected a mapping"),
    ],
)
def test_unknown_key_names_the_file(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        build_config(recipe=None, config_file=_yaml(tmp_path / "typo.yaml", text))


def test_unknown_key_in_a_recipe_names_the_recipe(tmp_path):
    bad = _yaml(tmp_path / "badrecipe.yaml", "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"badrecipe\.yaml\.optim: unknown key 'learning_rate'"):
        build_config(recipe=str(bad))


def test_unknown_override_key():
    with pytest.raises(ConfigError, match="command line.train: unknown key 'epoch'"):
        build_config(recipe=None, overrides={"train": {"epoch": 1}})


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "epochs", "3", 3),
        ("optim", "lr", "1e-3", 0.001),
        ("optim", "lr", 1, 1.0),
        ("augment", "enabled", "yes", True),
        ("augment", "hflip", "false", False),
        ("data", "image_size", None, None),
        ("optim", "grad_clip", 2, 2.0),
        ("optim", "milestones", [0.3, "0.6"], [0.3, 0.6]),
        ("model", "name", "resnet18_28", "resnet18_28"),
    ],
)
def test_type_coercion(section, key, value, expected):
    cfg = config_from_dict({section: {key: value}})
    got = getattr(getattr(cfg, section), key)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("train", "epochs", "many", "expected an integer"),
        ("train", "epochs", 2.5, "expected an integer"),
        ("train", "epochs", True, "expected an integer"),
        ("optim", "lr", "fast", "expected a number"),
        ("augment", "enabled", "maybe", "expected true/false"),
        ("train", "epochs", None, "null is not allowed"),
        ("optim", "milestones", 0.5, "expected a list"),
    ],
)
def test_type_errors(tmp_path, section, key, value, match):
    path = _yaml(tmp_path / "types.yaml", yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError, match=rf"types\.yaml\.{section}\.{key}: {match}"):
        build_config(recipe=None, config_file=path)


def test_read_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        read_yaml(_yaml(tmp_path / "broken.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        read_yaml(_yaml(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert read_yaml(_yaml(tmp_path / "empty.yaml", "")) == {}


def test_dump_and_reload_roundtrip(tmp_path):
    cfg = build_config(
        recipe="default",
        overrides={
            "data": {"spec": "folder/x.npz", "image_size": 64},
            "optim": {"grad_clip": 1.5},
            "train": {"seed": 11},
        },
    )
    cfg.name = "run-1"
    text = dump_yaml(cfg)
    assert text.index("data:") < text.index("model:") < text.index("train:")  # field order kept
    again = config_from_dict(yaml.safe_load(text))
    assert again == cfg
    path = _yaml(tmp_path / "config.yaml", text)
    assert config_from_dict(read_yaml(path), str(path)) == cfg
    assert dump_yaml(again) == text


_SPECIALISED = """\
train:
  epochs: 7
per_modality:
  xray:
    eval: {tta: [shift]}
    train: {epochs: 9}
  pneumoniamnist:
    train: {epochs: 11}
  ultrasound:
    augment: {hflip: true}
"""


def test_per_modality_sections_apply_after_the_recipe_and_before_the_user(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(_SPECIALISED)
    plain = build_config(recipe=str(recipe))
    assert plain.train.epochs == 7 and plain.eval.tta == [] and plain.data.modality is None
    xray = build_config(recipe=str(recipe), modality="xray", dataset="other")
    assert xray.train.epochs == 9 and xray.eval.tta == ["shift"] and xray.data.modality == "xray"
    named = build_config(recipe=str(recipe), modality="xray", dataset="pneumoniamnist")
    assert named.train.epochs == 11 and named.eval.tta == ["shift"]  # the dataset's section after the modality's
    user = tmp_path / "u.yaml"
    user.write_text("train:\n  epochs: 5\ndata:\n  modality: ultrasound\n")
    mine = build_config(recipe=str(recipe), config_file=user, modality="xray", dataset="x")
    assert mine.train.epochs == 5 and mine.augment.hflip and mine.eval.tta == []  # the user's modality wins
    assert build_config(recipe=str(recipe), overrides={"train": {"epochs": 2}}, modality="xray").train.epochs == 2
    with pytest.raises(ConfigError, match=r"per_modality.xray.train: unknown key 'epoch'"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("per_modality:\n  xray:\n    train: {epoch: 3}\n")
        build_config(recipe=str(bad), modality="xray")


def test_every_catalog_dataset_has_a_modality():
    from medclass.data.catalog import CATALOG, MODALITIES, get_info

    assert set(MODALITIES) == set(CATALOG)
    assert get_info("breastmnist").modality == "ultrasound" and get_info("adrenalmnist3d").modality == "ct"


def test_train_applies_the_section_of_its_data(tmp_path, make_npz, run_cli, fast_config):
    recipe = tmp_path / "spec.yaml"
    recipe.write_text(fast_config.read_text() + "per_modality:\n  mydata:\n    eval: {tta: [hflip]}\n")
    data = make_npz(tmp_path / "mydata.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--recipe", recipe, "--out", tmp_path / "run", "--quiet")
    assert res.code == 0, res.err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["eval"]["tta"] == ["hflip"]


def test_every_shipped_recipe_resolves_for_every_catalog_dataset():
    from medclass.data.catalog import CATALOG

    for recipe in list_recipes():
        for info in CATALOG.values():
            cfg = build_config(recipe=recipe, modality=info.modality, dataset=info.name)
            assert cfg.data.modality == info.modality and cfg.train.ensemble >= 1
    breast = build_config(recipe="best", modality=CATALOG["breastmnist"].modality, dataset="breastmnist")
    chest = build_config(recipe="best", modality=CATALOG["pneumoniamnist"].modality, dataset="pneumoniamnist")
    adrenal = build_config(recipe="best", modality=CATALOG["adrenalmnist3d"].modality, dataset="adrenalmnist3d")
    assert (breast.train.ensemble, chest.train.ensemble) == (3, 1)  # the breastmnist section, not the others
    assert breast.eval.tta == chest.eval.tta == ["shift"] and adrenal.eval.tta == ["hflip", "vflip"]
    assert {breast.train.max_minutes, chest.train.max_minutes, adrenal.train.max_minutes} == {15}


# ------------------------------------------------------------------------------- enum-like values


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("select_metric", "aucc", "train.select_metric: 'aucc' is not one of auc, acc, loss"),
        ("precision", "fp64", "train.precision: 'fp64' is not one of auto, bf16, fp32"),
    ],
)
def test_a_typo_in_a_choice_names_the_file_and_the_choices(tmp_path, key, value, message):
    path = _yaml(tmp_path / "typo.yaml", f"train:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        build_config(recipe="default", config_file=path)
    assert str(err.value) == f"{path}.{message}" and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config(recipe="default", overrides={"train": {key: value}})
    assert str(err.value) == f"command line.{message}"


def test_choices_in_lists_and_optional_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"^x\.yaml\.eval\.tta\[1\]: 'rot90' is not one of hflip, vflip, shift$"):
        config_from_dict({"eval": {"tta": ["hflip", "rot90"]}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"optim\.class_weight: 'inverse' is not one of balanced, null$"):
        config_from_dict({"optim": {"class_weight": "inverse"}})
    with pytest.raises(ConfigError, match=r"train\.select_metric: null is not allowed"):
        config_from_dict({"train": {"select_metric": None}})
    with pytest.raises(ConfigError, match=r"train\.precision: 16 is not one of"):
        config_from_dict({"train": {"precision": 16}})
    cfg = config_from_dict(
        {"optim": {"name": "AdamW", "class_weight": "none", "schedule": "multistep"}, "eval": {"tta": ("shift",)}}
    )
    assert cfg.optim.name == "adamw" and cfg.optim.class_weight is None and cfg.optim.schedule == "multistep"
    assert cfg.eval.tta == ["shift"] and config_from_dict({"optim": {"class_weight": None}}).optim.class_weight is None
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_the_choices_are_those_the_code_accepts():
    from typing import get_args, get_type_hints

    from medclass.config import AugmentConfig, DataConfig, EvalConfig, ModelConfig, OptimConfig, TrainConfig
    from medclass.transforms.histogram import EQUALIZE_METHODS
    from medclass.transforms.tta import TTA_VIEWS
    from medclass.trust.scaling import METHODS

    def choices(cls: type, name: str) -> set:
        hint = get_type_hints(cls)[name]
        while not all(isinstance(a, str) for a in get_args(hint)):  # Literal inside list[...] or ... | None
            hint = next(a for a in get_args(hint) if get_args(a))
        return set(get_args(hint))

    assert choices(DataConfig, "equalize") == set(EQUALIZE_METHODS)
    assert choices(EvalConfig, "tta") == set(TTA_VIEWS)
    assert choices(EvalConfig, "calibration") == set(METHODS)
    assert choices(EvalConfig, "operating_point") == {"youden", "sensitivity"}
    assert choices(OptimConfig, "class_weight") == {"balanced"}
    assert choices(AugmentConfig, "policy") == {"none", "trivial"}
    assert choices(ModelConfig, "freeze") == {"none", "backbone", "gradual"}
    assert choices(TrainConfig, "sampler") == {"random", "balanced"}


def test_every_choice_of_optimiser_and_schedule_builds():
    from typing import get_args, get_type_hints

    import torch

    from medclass.config import OptimConfig
    from medclass.training.optim import build_optimizer, build_scheduler

    hints = get_type_hints(OptimConfig)
    model = torch.nn.Linear(2, 2)
    for name in get_args(hints["name"]):
        for schedule in get_args(hints["schedule"]):
            cfg = config_from_dict({"optim": {"name": name, "schedule": schedule, "warmup_epochs": 0}}).optim
            scheduler = build_scheduler(build_optimizer(model, cfg), cfg, steps_per_epoch=2, epochs=2)  # runs step 0
            assert 0 < scheduler.get_last_lr()[0] <= cfg.lr
    assert set(get_args(hints["name"])) == {"adamw", "adam", "sgd"}


def test_every_shipped_recipe_and_its_sections_validate():
    from medclass.config import _merge

    names = list_recipes()
    assert {"default", "best", "hires"} <= set(names)
    for name in names:
        path = find_recipe(name)
        cfg = config_from_dict(read_yaml(path), str(path))  # every value checked, choices included
        assert build_config(recipe=name).train.select_metric in ("auc", "acc", "loss")
        for key, section in cfg.per_modality.items():
            _merge(RunConfig(), section, f"{path}.per_modality.{key}")


# ------------------------------------------------------------------------------ explicit values win


def test_explicit_epochs_are_not_raised_by_the_recipes_min_steps(tmp_path):
    assert read_yaml(find_recipe("default"))["train"]["min_steps"] == 1000
    assert build_config(recipe="default").train.min_steps == 1000  # the recipe's, when epochs come from it too
    cfg = build_config(recipe="default", overrides={"train": {"epochs": 1}})
    assert (cfg.train.epochs, cfg.train.min_steps) == (1, 0)
    both = build_config(recipe="default", overrides={"train": {"epochs": 1, "min_steps": 200}})
    assert (both.train.epochs, both.train.min_steps) == (1, 200)  # both explicit: both kept
    user = _yaml(tmp_path / "u.yaml", "train:\n  epochs: 3\n")
    assert build_config(recipe="default", config_file=user).train.min_steps == 1000  # a file is not a flag
    assert build_config(recipe="default", overrides={"train": {"epochs": None}}).train.min_steps == 1000  # unset
    overrides = {"train": {"epochs": 2}}
    build_config(recipe="default", overrides=overrides)
    assert overrides == {"train": {"epochs": 2}}  # the caller's mapping is left as it was


def test_explicit_epochs_win_over_a_modality_section(tmp_path):
    recipe = _yaml(tmp_path / "r.yaml", "train:\n  min_steps: 500\nper_modality:\n  ct:\n    train: {min_steps: 900}\n")
    cfg = build_config(recipe=str(recipe), overrides={"train": {"epochs": 2}}, modality="ct")
    assert (cfg.train.epochs, cfg.train.min_steps) == (2, 0)
    assert build_config(recipe=str(recipe), modality="ct").train.min_steps == 900
