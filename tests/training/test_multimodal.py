"""Training and predicting with clinical fields: every fusion method end to end on a manifest whose label lies in a
clinical field, the schema fitted on training rows and stored, prediction with and without fields."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import medclass
from medclass.errors import ConfigError, DataError
from medclass.metrics.classification import roc_auc

FAST = {"epochs": 6, "batch_size": 16, "train.min_steps": 0, "train.threads": 1, "train.precision": "fp32"}
FAST.update({"train.device": "cpu", "train.eval_batch_size": 64, "eval.n_bootstrap": 20})
METHODS = ("concat", "film", "late", "tabular_only")


def _train(data: Path, out: Path, **options) -> medclass.api.Run:
    return medclass.train(data, recipe="default", out=out, progress=False, **{**FAST, **options})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, clinical_manifest) -> dict:
    """The data (noise images whose label is ``age > 50``), one run per fusion method and an image-only one."""
    root = tmp_path_factory.mktemp("multimodal")
    data = clinical_manifest(root / "data", n=160)
    out = {"data": data, "none": _train(data, root / "none")}
    for method in METHODS:
        out[method] = _train(data, root / method, tabular=["age", "sex"], fusion=method)
    return out


def _test_split(run: medclass.api.Run):
    from medclass.data.sources import load_configured

    return load_configured(run.config.data).splits["test"]


def test_every_fusion_uses_the_clinical_signal_that_images_lack(runs):
    image_only = runs["none"].metrics["splits"]["test"]["auc"]
    assert image_only < 0.7, "the images carry no signal"
    for method in METHODS:
        auc = runs[method].metrics["splits"]["test"]["auc"]
        assert auc > 0.85 and auc > image_only + 0.2, (method, auc, image_only)


def test_the_checkpoint_records_fusion_and_the_schema_fitted_on_training_rows(runs):
    from medclass.data.sources import load_configured

    run = runs["film"]
    meta = json.loads((run.path / "model.json").read_text())
    fusion = meta["architecture"]["fusion"]
    assert fusion["method"] == "film" and fusion["tabular_dim"] == 5 and fusion["modality_dropout"] == 0.2
    assert fusion["features"] == ["age", "age:missing", "sex=f", "sex=m", "sex:missing"]
    age, sex = meta["preprocessing"]["tabular"]["columns"]
    ds = load_configured(run.config.data)
    train = np.array([float(v) for v in ds.splits["train"].tabular.columns["age"] if v], dtype=np.float64)
    every = np.array([float(v) for s in ds.splits.values() for v in s.tabular.columns["age"] if v], dtype=np.float64)
    assert (
        age["kind"] == "numeric"
        and age["mean"] == pytest.approx(train.mean())
        and age["std"] == pytest.approx(train.std())
    )
    assert age["mean"] != pytest.approx(every.mean()), "validation and test rows are not used"
    assert sex == {"name": "sex", "kind": "categorical", "categories": ["f", "m"]}
    assert "fusion" not in json.loads((runs["none"].path / "model.json").read_text())["architecture"]
    assert "tabular" not in json.loads((runs["none"].path / "model.json").read_text())["preprocessing"]


def test_predicting_through_the_checkpoint_gives_the_evaluated_probabilities(runs):
    test = _test_split(runs["concat"])
    rows = [dict(zip(test.tabular.columns, vals, strict=True)) for vals in zip(*test.tabular.columns.values())]
    images = test.images[:, 0].numpy()
    for method in METHODS:
        predictor = medclass.load(runs[method].path)
        assert predictor.clinical_fields == ["age", "sex"]
        probs = predictor.predict_proba(images, tabular=rows)
        expect = runs[method].metrics["splits"]["test"]["auc"]
        assert roc_auc(test.labels, probs[:, 1]) == pytest.approx(expect, abs=1e-9), method
        again = medclass.load(runs[method].path).predict_proba(
            images, tabular={k: list(v) for k, v in test.tabular.columns.items()}
        )
        np.testing.assert_array_equal(again, probs)  # a second load, the columns form: identical


def test_without_fields_every_field_is_missing(runs):
    predictor = medclass.load(runs["late"].path)
    images = _test_split(runs["late"]).images[:6, 0].numpy()
    none = predictor.predict_proba(images)
    np.testing.assert_array_equal(none, predictor.predict_proba(images, tabular=[{}] * 6))
    np.testing.assert_array_equal(none, predictor.predict_proba(images, tabular=[{"age": None, "sex": ""}] * 6))
    young = predictor.predict_proba(images[:1], tabular=[{"age": 25}])
    old = predictor.predict_proba(images[:1], tabular=[{"age": 75}])
    assert old[0, 1] > young[0, 1] + 0.2, "the field moves the prediction the way the label does"
    with pytest.raises(DataError, match="trained on images only"):
        medclass.load(runs["none"].path).predict_proba(images, tabular=[{"age": 3}] * 6)
    with pytest.raises(DataError, match="unknown field"):
        predictor.predict_proba(images[:1], tabular=[{"weight": 3}])


def test_cli_predict_matches_clinical_fields_by_file_name(runs, run_cli, tmp_path):
    data = runs["data"]
    images = [data.parent / "img" / f"{i:03d}.png" for i in (3, 4, 5)]
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("file,age,sex,note\n003.png,75,f,x\n004.png,25,,y\n", encoding="utf-8")
    res = run_cli("predict", "--checkpoint", runs["concat"].path, *images, "--clinical", clinical)
    assert res.code == 0, res.err
    rows = list(csv.DictReader(res.out.splitlines()))
    predictor = medclass.load(runs["concat"].path)
    fields = [{"age": 75, "sex": "f"}, {"age": 25}, {}]  # 005.png has no row: every field missing
    expect = predictor.predict_proba([str(p) for p in images], tabular=fields)
    got = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert "1 of 3 images have no row" in res.err
    plain = run_cli("predict", "--checkpoint", runs["concat"].path, *images)
    expect_none = predictor.predict_proba([str(p) for p in images])
    got_none = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in csv.DictReader(plain.out.splitlines())])
    np.testing.assert_allclose(got_none, expect_none, atol=1e-6)


def test_evaluate_scores_a_fusion_checkpoint_as_training_did(runs, run_cli, tmp_path):
    res = run_cli("evaluate", "--checkpoint", runs["film"].path, "--data", runs["data"], "--out", tmp_path / "ev")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["splits"]["test"]["auc"] == pytest.approx(runs["film"].metrics["splits"]["test"]["auc"])


def test_fusion_without_columns_and_one_input_options_are_refused(runs, tmp_path):
    from medclass.api import overrides_from
    from medclass.training.run import resolve_run

    data = str(runs["data"])
    with pytest.raises(ConfigError, match="needs clinical fields"):
        resolve_run(recipe="default", overrides=overrides_from(data=data, options={"fusion": "film"}))
    with pytest.raises(ConfigError, match="mixup"):
        options = {"tabular": "age", "augment.mixup": 0.2}
        resolve_run(recipe="default", overrides=overrides_from(data=data, options=options))
    cfg, _ = resolve_run(recipe="default", overrides=overrides_from(data=data, options={"tabular": "age"}))
    assert cfg.model.fusion == "concat", "clinical columns without a fusion method: concat"
    with pytest.raises(DataError, match="runs alone"):
        medclass.Predictor.from_checkpoint(runs["concat"].path, mc_samples=2)


def test_an_unreadable_value_in_test_rows_is_one_line_naming_file_row_and_column(
    tmp_path, run_cli, fast_config, clinical_manifest
):
    data = clinical_manifest(tmp_path / "d", n=60)
    lines = data.read_text().splitlines()
    splits = ["train" if i % 10 < 7 else "val" if i % 10 == 7 else "test" for i in range(60)]
    lines = [lines[0] + ",split"] + [f"{line},{s}" for line, s in zip(lines[1:], splits, strict=True)]
    path, label, _, sex, split = lines[-1].split(",")
    assert split == "test"
    lines[-1] = ",".join([path, label, "forty", sex, split])  # numeric in training, text in a test row
    data.write_text("\n".join(lines) + "\n")
    res = run_cli(
        "train", "--data", data, "--config", fast_config, "--out", tmp_path / "run", "--tabular", "age,sex", "-q"
    )
    assert res.code == 2 and res.err.count("\n") == 1, res.err
    assert f"m.csv: row {len(lines)}, column 'age': cannot read 'forty' as a number" in res.err
    assert not (tmp_path / "run").exists(), "refused before training"


def test_training_warns_about_a_clinical_field_that_gives_the_label_away(runs, caplog):
    from medclass.data.sources import load_configured
    from medclass.training.multimodal import warn_leaking_fields

    ds = load_configured(runs["concat"].config.data)
    with caplog.at_level("WARNING", logger="medclass.training.multimodal"):
        warnings = warn_leaking_fields(ds, ["age", "sex"])
    assert len(warnings) == 1 and warnings[0].startswith("clinical field 'age' "), warnings  # the label is age > 50
    assert warnings[0] in caplog.text and "'sex'" not in caplog.text


def test_field_importance_in_the_run_names_the_field_that_carries_the_label(runs):
    importance = runs["concat"].metrics["field_importance"]
    assert importance["_all"]["auc"] == pytest.approx(runs["concat"].metrics["splits"]["test"]["auc"], abs=1e-6)
    assert importance["age"]["auc_drop"] > 0.2, importance  # the label is age > 50
    assert abs(importance["sex"]["auc_drop"]) < 0.05, importance
    assert "<h2>Clinical fields</h2>" in (runs["concat"].path / "report.html").read_text()


def test_field_contributions_against_predictions_with_the_field_withheld(runs):
    from medclass.explain.fields import field_contributions

    predictor = medclass.load(runs["film"].path)
    images, _ = predictor.load_inputs([str(runs["data"].parent / "img" / f"{i:03d}.png") for i in range(4)])
    rows = [{"age": 75, "sex": "f"}, {"age": 25, "sex": "m"}, {"sex": "f"}, {"age": 80}]
    targets = np.array([1, 1, 0, 1])
    got = field_contributions(predictor, images, rows, targets)
    for i, row in enumerate(rows):
        full = predictor.probs(images[i : i + 1], tabular=[row])[0, targets[i]]
        for j, field in enumerate(predictor.clinical_fields):
            rest = {k: v for k, v in row.items() if k != field}
            want = full - predictor.probs(images[i : i + 1], tabular=[rest])[0, targets[i]]
            assert got[i, j] == pytest.approx(want, abs=1e-6)
    assert got[0, 0] > 0.1 and got[1, 0] < -0.1, got  # an old age raises P(1), a young one lowers it
    assert got[2, 0] == 0.0, "a missing field contributes nothing"


def test_cli_explain_writes_each_field_contribution_beside_the_heat_map(runs, run_cli, tmp_path):
    data = runs["data"]
    images = [data.parent / "img" / f"{i:03d}.png" for i in (3, 4)]
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("file,age,sex\n003.png,75,f\n004.png,25,m\n", encoding="utf-8")
    res = run_cli("explain", "--checkpoint", runs["film"].path, *images, "--clinical", clinical, "--out", tmp_path)
    assert res.code == 0, res.err
    records = json.loads((tmp_path / "explanations.json").read_text())["explanations"]
    assert [r["fields"]["age"]["value"] for r in records] == ["75", "25"]
    assert [r["target"] for r in records] == ["1", "0"], records  # the decision follows age, the label's field
    assert all(r["fields"]["age"]["contribution"] > 0.05 for r in records), records  # and age supports it
    assert (tmp_path / records[0]["png"]).is_file() and "clinical fields:" in res.out
    # the heat map is the model's with that image's own fields, not with every field missing
    from medclass.explain.fields import with_fields
    from medclass.explain.methods import saliency
    from medclass.inference import to_input

    ig = tmp_path / "ig"
    args = ["--clinical", clinical, "--out", ig, "--method", "integrated-gradients"]
    assert run_cli("explain", "--checkpoint", runs["film"].path, *images, *args).code == 0
    records = json.loads((ig / "explanations.json").read_text())["explanations"]
    predictor = medclass.load(runs["film"].path)
    x = to_input(predictor.load_inputs(images)[0], predictor.prep)
    fields = predictor.encode_tabular([{"age": "75", "sex": "f"}], 1)
    saved = np.load(ig / records[0]["npy"])
    bound = saliency(with_fields(predictor.model, fields), predictor.task, x[:1], [1], "integrated-gradients")[0]
    missing = saliency(predictor.model, predictor.task, x[:1], [1], "integrated-gradients")[0]
    assert np.allclose(saved, bound, atol=1e-5)
    assert not np.allclose(saved, missing, atol=1e-3), "FiLM conditions the feature maps on the fields"


def test_gradient_boosting_on_the_fields_alone_finds_the_label_and_needs_fields(runs):
    from medclass.training.tabular_baseline import fit_gradient_boosting

    ds = medclass.load_dataset(str(runs["data"]), tabular=["age", "sex"])
    probs = fit_gradient_boosting(ds)
    assert {k: v.shape for k, v in probs.items()} == {k: (len(s), 2) for k, s in ds.splits.items()}
    test = ds.splits["test"]
    assert roc_auc(test.labels, probs["test"][:, 1]) > 0.85  # age decides the label; 10% of ages are missing
    with pytest.raises(ConfigError, match="no clinical fields"):
        fit_gradient_boosting(medclass.load_dataset(str(runs["data"])))
