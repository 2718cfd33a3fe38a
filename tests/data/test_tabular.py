"""Clinical fields from manifests: the raw table per split, and the schema fitted on training rows only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data.files import read_manifest
from medclass.data.sources import load_dataset, load_manifest
from medclass.data.tabular import TabularSchema, TabularTable, fit_schema, is_missing
from medclass.errors import DataError


def _table(**columns: list) -> TabularTable:
    return TabularTable({k: np.array(v, dtype=object) for k, v in columns.items()}, None, "t.csv")


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pngs(folder: Path, n: int) -> list[str]:
    """n 4x4 grey PNGs whose pixel value is their index; paths relative to ``folder``."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(folder / "img" / f"{i:03d}.png")
        names.append(f"img/{i:03d}.png")
    return names


# ----------------------------------------------------------------------------------------------- schema


def test_numeric_columns_are_standardised_with_training_statistics():
    train = _table(age=["30", "50", "", "70"])
    schema = fit_schema(train)
    (code,) = schema.columns
    assert code.kind == "numeric"
    known = np.array([30.0, 50.0, 70.0])
    assert code.mean == pytest.approx(known.mean()) and code.std == pytest.approx(known.std())
    x = schema.transform(_table(age=["40", "nan", " 100 "]))
    assert x.dtype == np.float32 and x.shape == (3, 2)
    expect = [[(40 - known.mean()) / known.std(), 0], [0, 1], [(100 - known.mean()) / known.std(), 0]]
    np.testing.assert_allclose(x, expect, rtol=1e-6)
    assert schema.feature_names() == ["age", "age:missing"]


def test_a_constant_column_divides_by_one():
    schema = fit_schema(_table(dose=["2", "2"]))
    assert schema.columns[0].std == 1.0
    np.testing.assert_allclose(schema.transform(_table(dose=["5"])), [[3.0, 0.0]])


def test_categorical_one_hot_unseen_is_other_and_missing_has_its_indicator():
    schema = fit_schema(_table(sex=["male", "female", "male", "unknown"]))
    assert schema.columns[0].kind == "categorical" and schema.columns[0].categories == ["female", "male"]
    x = schema.transform(_table(sex=["female", "male", "other", "", "unknown"]))
    np.testing.assert_array_equal(x, [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]])
    assert schema.feature_names() == ["sex=female", "sex=male", "sex:missing"]


def test_the_kind_comes_from_the_training_rows_only():
    # numbers everywhere but one training cell: categorical, so a number in val is a category (unseen here)
    schema = fit_schema(_table(grade=["1", "2", "high"]))
    assert schema.columns[0].kind == "categorical"
    np.testing.assert_array_equal(schema.transform(_table(grade=["2", "3"])), [[0, 1, 0, 0], [0, 0, 0, 0]])
    # a numeric training column: text at validation time cannot be read, one line naming file, row, column
    numeric = fit_schema(_table(age=["1", "2"]))
    val = TabularTable({"age": np.array(["3", "forty"], dtype=object)}, np.array([7, 9]), "data/m.csv")
    with pytest.raises(DataError) as err:
        numeric.transform(val)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data/m.csv: row 9, column 'age'") and "'forty'" in message


def test_missing_tokens_and_python_missing_values():
    for value in ("", " ", "NaN", "na", "N/A", "null", "?", "Unknown", None, float("nan")):
        assert is_missing(value), value
    for value in ("0", 0, 0.0, "none", "no"):
        assert not is_missing(value), value


def test_every_column_has_a_missing_indicator_and_an_all_missing_vector():
    schema = fit_schema(_table(age=["1", "3"], site=["arm", "leg"]))
    np.testing.assert_array_equal(schema.missing_vector(), [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(schema.transform(None, n=2), np.tile(schema.missing_vector(), (2, 1)))


def test_a_column_empty_in_every_training_row_is_refused():
    with pytest.raises(DataError, match="column 'bmi' is empty in every training row"):
        fit_schema(_table(bmi=["", "nan"]))


def test_json_round_trip_encodes_identically():
    rng = np.random.default_rng(0)
    ages = [f"{a:.3f}" for a in rng.normal(50, 13, 40)] + [""]
    sites = [str(s) for s in rng.choice(["arm", "leg", "back"], 41)]
    schema = fit_schema(_table(age=ages, site=sites))
    restored = TabularSchema.from_json(json.loads(json.dumps(schema.to_json())))
    probe = _table(age=["12.5", "", "99"], site=["leg", "face", ""])
    np.testing.assert_array_equal(restored.transform(probe), schema.transform(probe))
    assert restored.feature_names() == schema.feature_names()


def test_rows_as_dicts_or_columns_with_fields_left_out():
    schema = fit_schema(_table(age=["20", "40"], sex=["f", "m"]))
    z = (20 - 30) / 10
    dicts = schema.transform([{"age": 20, "sex": "f"}, {"sex": "m"}, {}])
    np.testing.assert_allclose(dicts, [[z, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1]])
    columns = schema.transform({"age": [20, None, float("nan")], "sex": ["f", "m", None]})
    np.testing.assert_allclose(columns, [[z, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1]])
    np.testing.assert_array_equal(schema.transform({}, n=2), np.tile(schema.missing_vector(), (2, 1)))
    with pytest.raises(DataError, match="unknown field.*Age.*the model takes: age, sex"):
        schema.transform([{"Age": 3}])
    with pytest.raises(DataError, match="2 rows of clinical fields for 3 images"):
        schema.transform([{}, {}], n=3)
    with pytest.raises(DataError, match="row 2, column 'age'"):
        schema.transform([{"age": 1}, {"age": "old"}])


# ----------------------------------------------------------------------------------------- manifests


def test_read_manifest_keeps_the_columns_per_row(tmp_path):
    names = _pngs(tmp_path, 4)
    rows = [[n, i % 2, str(30 + i), ["f", "m"][i % 2], "true" if i != 1 else "false"] for i, n in enumerate(names)]
    path = _write(tmp_path / "m.csv", ["path", "label", "age", "sex", "readable"], rows)
    table = read_manifest(path, tabular=["age", "sex"])
    tab = table.tabular
    assert list(tab.columns) == ["age", "sex"] and tab.columns["age"].tolist() == ["30", "32", "33"]
    assert tab.rows.tolist() == [2, 4, 5], "line numbers of the rows kept (row 3 is unreadable)"
    assert read_manifest(path).tabular is None


def test_a_missing_or_label_column_is_one_line_naming_the_columns(tmp_path):
    names = _pngs(tmp_path, 2)
    path = _write(tmp_path / "m.csv", ["path", "label", "age"], [[n, i, 40] for i, n in enumerate(names)])
    with pytest.raises(DataError) as err:
        read_manifest(path, tabular=["age", "bmi"])
    message = str(err.value)
    assert "\n" not in message and "m.csv" in message and "'bmi'" in message and "columns: path, label, age" in message
    with pytest.raises(DataError, match="hold the label"):
        read_manifest(path, tabular=["label"])


def test_without_a_label_column_clinical_columns_are_not_labels(tmp_path):
    names = _pngs(tmp_path, 4)
    path = _write(tmp_path / "m.csv", ["path", "tumour", "age"], [[n, i % 2, 40 + i] for i, n in enumerate(names)])
    table = read_manifest(path, tabular=["age"])
    assert table.task is None and table.labels.ndim == 1 and table.labels.tolist() == [0, 1, 0, 1]


def test_splits_keep_the_clinical_fields_aligned_with_their_images(tmp_path):
    names = _pngs(tmp_path, 40)
    rows = [[n, i % 2, i, f"p{i // 2}"] for i, n in enumerate(names)]
    rows.append([names[5], 1, 99, "p99"])  # byte-identical copy of image 5: dropped before splitting
    path = _write(tmp_path / "m.csv", ["path", "label", "index", "patient_id"], rows)
    ds = load_manifest(path, tabular=["index"], val=0.2, test=0.2, seed=0)
    assert sum(len(s) for s in ds.splits.values()) == 40
    for split in ds.splits.values():
        pixel = split.images[:, 0, 0, 0].numpy().tolist()
        assert [int(v) for v in split.tabular.columns["index"]] == pixel
        assert split.tabular.rows.tolist() == [p + 2 for p in pixel], "line numbers travel with the rows"
        sub = split.subset(np.array([1, 0]))
        assert [int(v) for v in sub.tabular.columns["index"]] == sub.images[:, 0, 0, 0].numpy().tolist()
    no_tab = load_manifest(path, val=0.2, test=0.2, seed=0)
    assert no_tab.splits["train"].tabular is None
    assert no_tab.content_sha256() != ds.content_sha256(), "clinical fields are part of what the model sees"


def test_sources_without_columns_refuse_tabular(tmp_path, make_npz):
    data = make_npz(tmp_path, sizes=(4, 2, 2))
    with pytest.raises(DataError, match="tabular=.*applies to CSV manifests only"):
        load_dataset(str(data), tabular=["age"])


# ------------------------------------------------------------------------------------ config, API, CLI


def test_config_api_and_cli_take_the_columns(tmp_path, run_cli):
    from medclass.api import overrides_from
    from medclass.config import build_config

    cfg = build_config(recipe=None, overrides=overrides_from(data="m.csv", options={"tabular": "age, sex"}))
    assert cfg.data.tabular == ["age", "sex"] and cfg.data.file_options()["tabular"] == ["age", "sex"]
    assert "tabular" not in build_config(recipe=None).data.file_options()
    names = _pngs(tmp_path, 2)
    path = _write(tmp_path / "m.csv", ["path", "label", "age"], [[n, i, 40] for i, n in enumerate(names)])
    res = run_cli("train", "--data", path, "--tabular", "age,weight", "--out", tmp_path / "run", "--quiet")
    assert res.code == 2 and res.err.count("\n") == 1 and "'weight' not in the manifest" in res.err
