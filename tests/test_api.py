"""The public Python API: the README's example runs as written, and train/load/predict_proba keep their contracts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medclass
from medclass.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python API", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_readme_example_runs(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(shared_data / "medmnist"))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), scope)  # noqa: S102 - our own example
    run, probs, records = scope["run"], scope["probs"], scope["records"]
    assert (tmp_path / "runs" / "api-demo" / "model.safetensors").is_file()
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len(records) == 4 and set(records[0]["probs"]) == set(scope["predictor"].label_names)
    cfg = run.config
    assert cfg.train.epochs == 1 and cfg.train.min_steps == 0, "an explicit epochs is the number trained"
    assert len(json.loads((run.path / "state.json").read_text())["history"]) == 1


def test_import_medclass_loads_nothing_heavy():
    code = "import sys, medclass; print(sorted(m for m in ('torch', 'numpy', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve():
    from medclass.api import Run, load, train
    from medclass.models import create_model, list_models
    from medclass.predict import Predictor

    assert medclass.train is train and medclass.load is load and medclass.Run is Run
    assert medclass.create_model is create_model and medclass.list_models is list_models
    assert medclass.Predictor is Predictor
    assert "smallcnn" in medclass.list_models()
    with pytest.raises(AttributeError):
        medclass.no_such_name  # noqa: B018


def test_train_options_and_errors(small_binary_run):
    from medclass.api import overrides_from

    o = overrides_from(
        data="x.npz", model="resnet18_28", options={"epochs": 3, "augment.rotate": 5.0, "optim": {"lr": 0.1}}
    )
    assert o["train"]["epochs"] == 3 and o["augment"]["rotate"] == 5.0 and o["optim"]["lr"] == 0.1
    assert o["model"] == {"name": "resnet18_28", "members": []}
    assert overrides_from(options={"target_sensitivity": 0.9})["eval"]["operating_point"] == "sensitivity"
    from medclass.config import build_config

    nulls = overrides_from(data="x.npz", options={"train.max_minutes": None, "seed": None})
    cfg = build_config(recipe="best", overrides=nulls)
    assert cfg.train.max_minutes is None and cfg.train.seed == 0, "dotted None sets null; a shortcut's None is unset"
    assert build_config(recipe="best", overrides=overrides_from(data="x.npz")).train.max_minutes is not None
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        overrides_from(options={"epoch": 3})
    with pytest.raises(DataError, match="not a medclass run"):
        medclass.api.Run(small_binary_run[1].parent)


def test_predict_proba_takes_arrays_and_paths(small_binary_run, tmp_path):
    run, data = small_binary_run
    predictor = medclass.load(run)
    images = np.load(data)["test_images"]  # (12, 16, 16) uint8
    reference, _ = predictor.predict_array(images)
    p = predictor.predict_proba(images)
    assert p.shape == (len(images), 2) and np.allclose(p, reference, atol=1e-6)
    assert np.allclose(predictor.predict_proba(images.astype(np.float32) / 255), reference, atol=1e-6)
    assert np.allclose(predictor.predict_proba(images[0]), reference[:1], atol=1e-6), "one image without N"
    np.save(tmp_path / "x.npy", images)
    assert np.allclose(predictor.predict_proba(tmp_path / "x.npy"), reference, atol=1e-6)
    records = predictor.predict(images)
    decided = predictor.decide(reference)
    assert [r["label"] for r in records] == [predictor.label_names[i] for i in decided]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in records)
    with pytest.raises(DataError, match="cannot read"):
        predictor.predict_proba(np.zeros((2, 16, 16), dtype=bool))
