"""A whole run's configuration resolved against its data: ``auto``, and a recipe's ``fallback`` for unmeasured data."""

from __future__ import annotations

from medclass.config import build_config


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "tuned.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


TUNED = """\
fallback: auto
train:
  epochs: 30
per_modality:
  {name}:
    augment:
      rotate: 3
"""


def test_a_recipe_applies_only_where_it_was_measured(tmp_path, make_npz):
    from medclass.training.run import resolve_run

    data = make_npz(tmp_path / "synthetic.npz", sizes=(12, 4, 4))
    overrides = {"data": {"spec": str(data)}}
    measured = _recipe(tmp_path, TUNED.format(name="synthetic"))  # the data's name: the recipe holds
    cfg, dataset = resolve_run(recipe=measured, overrides=overrides)
    assert dataset.name == "synthetic" and cfg.train.epochs == 30 and cfg.augment.rotate == 3
    assert cfg.recipe == measured

    unmeasured = _recipe(tmp_path, TUNED.format(name="otherset"))  # no evidence here: auto's choice instead
    cfg, _ = resolve_run(recipe=unmeasured, overrides=overrides)
    auto = build_config(recipe="default")
    assert cfg.recipe == f"{unmeasured}>auto:default"
    assert cfg.train.epochs == auto.train.epochs and cfg.augment.rotate == auto.augment.rotate


def test_auto_records_its_choice(tmp_path, make_npz):
    from medclass.training.run import resolve_run

    data = make_npz(tmp_path / "big.npz", sizes=(6, 3, 3), size=64)
    cfg, _ = resolve_run(recipe="auto", overrides={"data": {"spec": str(data)}, "train": {"epochs": 1}})
    assert cfg.recipe == "auto:hires" and cfg.model.name == build_config(recipe="hires").model.name
    assert cfg.train.epochs == 1 and cfg.train.min_steps == 0, "the explicit value survives the recipe change"


def test_best_gives_way_to_auto_on_data_it_was_not_measured_on(tmp_path, make_npz):
    from medclass.training.run import resolve_run

    data = make_npz(tmp_path / "unseen.npz", sizes=(6, 3, 3))
    cfg, _ = resolve_run(recipe="best", overrides={"data": {"spec": str(data)}})
    assert cfg.recipe.startswith("best>auto:") and cfg.train.max_minutes is None and cfg.train.ensemble == 1
    measured = build_config(recipe="best", dataset="breastmnist", modality="ultrasound")
    assert measured.fallback == "auto" and measured.train.ensemble == 3, "where it was measured, best holds"
