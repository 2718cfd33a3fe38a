"""A BreastMNIST run is about malignant cases: label 0, not the second class.

One tiny training on the real BreastMNIST file (label 0 ``malignant``, label 1 ``normal, benign``) is
shared by the tests: the checkpoint and ``metrics.json`` name the positive class, the headline
sensitivity is the recall of label 0 recomputed from the saved model and threshold, and predict,
referral, the Grad-CAM gallery and the REST service's triage all follow it. Old checkpoints (no
``positive_index``) keep class 1, and a configured ``data.positive_class`` wins over the catalog.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch import nn

from medclass.errors import ConfigError
from medclass.predict import Predictor

pytestmark = pytest.mark.filterwarnings("ignore::medclass.metrics.UndefinedMetricWarning")

TINY = {
    "train": {
        "epochs": 1,
        "min_steps": 0,
        "batch_size": 64,
        "eval_batch_size": 256,
        "threads": 1,
        "precision": "fp32",
        "device": "cpu",
    },
    "eval": {"n_bootstrap": 20},
}


@pytest.fixture(scope="module")
def breast_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """``(run folder, dataset)``: one epoch of the default model on BreastMNIST (28 px), trained in process."""
    from medclass.config import build_config
    from medclass.data.sources import load_configured
    from medclass.training.run import run_training

    root = tmp_path_factory.mktemp("breast")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDCLASS_DATA_DIR", str(shared_data / "medmnist"))
        mp.setenv("MEDCLASS_CACHE_DIR", str(root / "cache"))
        cfg = build_config(recipe=None, overrides={"data": {"spec": "breastmnist"}, **TINY})
        dataset = load_configured(cfg.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_training(cfg, dataset, root / "run", progress=False)
        yield root / "run", dataset


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_run_names_malignant_and_its_sensitivity_is_the_recall_of_label_0(breast_run):
    run, dataset = breast_run
    meta, metrics = _json(run / "model.json"), _json(run / "metrics.json")
    assert meta["label_names"] == ["malignant", "normal, benign"]
    assert meta["positive_class"] == "malignant" and meta["positive_index"] == 0
    assert meta["triage"] == {"classes": ["malignant"], "indices": [0]}
    assert metrics["positive_class"] == "malignant"

    predictor = Predictor.from_checkpoint(run)
    test = dataset.splits["test"]
    probs, decided = predictor.predict_array(test.images.numpy())
    t = float(meta["threshold"])
    y = test.labels
    called_malignant = probs[:, 0] >= t  # the stored threshold is on P(malignant)
    recall_0 = float(np.mean(called_malignant[y == 0]))
    recall_1 = float(np.mean(~called_malignant[y == 1]))
    op = metrics["splits"]["test"]["operating_point"]
    assert op["threshold"] == pytest.approx(t)
    assert op["sensitivity"] == pytest.approx(recall_0, abs=1e-9)
    assert op["specificity"] == pytest.approx(recall_1, abs=1e-9)
    np.testing.assert_array_equal(decided, np.where(called_malignant, 0, 1))  # Predictor.decide agrees
    at_half = probs[:, 0] > 0.5
    assert metrics["splits"]["test"]["threshold_0.5"]["sensitivity"] == pytest.approx(np.mean(at_half[y == 0]))

    ref = metrics["splits"]["test"].get("referral")
    if ref is not None and meta["referral"]["cut"] is not None:  # sensitivity of malignant on accepted cases
        _, refer = predictor.referral(probs)
        accepted = ~refer & (y == 0)
        if accepted.any():
            assert ref["sensitivity"] == pytest.approx(np.mean(called_malignant[accepted]))
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Positive class: malignant" in html


def test_the_gallery_cells_are_about_malignant_cases():
    from medclass.explain.gallery import _cells

    y = np.array([0, 0, 1, 1, 0, 1, np.nan])
    p_malignant = np.array([0.9, 0.2, 0.7, 0.1, 0.6, 0.45, 0.99])
    probs = np.stack([p_malignant, 1 - p_malignant], axis=1)
    cells = _cells(y, probs, "binary", 0.5, 0)
    said = p_malignant >= 0.5
    known = ~np.isnan(y)
    naive = {
        "true positive": said & known & (y == 0),
        "false positive": said & known & (y == 1),
        "true negative": ~said & known & (y == 1),
        "false negative": ~said & known & (y == 0),
    }
    for name, mask in naive.items():
        assert sorted(cells[name].tolist()) == np.flatnonzero(mask).tolist(), name
    assert cells["true positive"].tolist() == [0, 4]  # most confident first: 0.9, then 0.6
    assert _cells(y, probs, "binary", 0.5)["true positive"].tolist() == [3, 5]  # class 1 positive: other cases


def test_the_gallery_of_the_run_explains_its_decisions(breast_run):
    from medclass.checkpoint import load_model
    from medclass.explain.gallery import gallery

    run, dataset = breast_run
    model, meta = load_model(run)
    test = dataset.splits["test"]
    probs = Predictor(model, meta).predict_array(test.images.numpy())[0]
    out = gallery(model, meta, test.images, test.labels, probs, per_cell=2)
    names = meta["label_names"]
    expected_label = {"true positive": 0, "false negative": 0, "false positive": 1, "true negative": 1}
    assert set(out) == set(expected_label)
    t = float(meta["threshold"])
    assert any(out.values())
    for cell, items in out.items():
        for item in items:
            assert item["label"] == names[expected_label[cell]]
            # The overlay explains the decision, and its probability is that of the decided class.
            if cell in ("true positive", "false positive"):  # called malignant: P(malignant) >= t
                assert item["prob"] >= t - 1e-6
            else:  # called benign: P(benign) = 1 - P(malignant) > 1 - t
                assert 1 - item["prob"] < t + 1e-6


def _stub(meta: dict[str, Any]) -> Predictor:
    base = {"preprocessing": {"input_shape": [1, 4, 4]}, "label_names": ["malignant", "benign"], "task": "binary"}
    return Predictor(nn.Identity(), {**base, **meta})


def test_decide_returns_the_positive_index_when_its_probability_reaches_the_threshold():
    p0 = np.array([0.1, 0.3, 0.31, 0.7, 0.95])
    probs = np.stack([p0, 1 - p0], axis=1)
    new = _stub({"positive_class": "malignant", "positive_index": 0, "threshold": 0.31})
    np.testing.assert_array_equal(new.decide(probs), np.where(p0 >= 0.31, 0, 1))
    assert new.decide(probs).tolist() == [1, 1, 0, 0, 0]
    old = _stub({"threshold": 0.31})  # a checkpoint from before positive_index: class 1, as it always was
    np.testing.assert_array_equal(old.decide(probs), (probs[:, 1] >= 0.31).astype(int))
    assert _stub({"positive_index": 0, "threshold": None}).decide(probs).tolist() == [1, 1, 1, 0, 0]


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_service_ranks_by_p_malignant(breast_run):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app
    from medclass.serve.page import PAGE

    run, _ = breast_run
    predictor = Predictor.from_checkpoint(run)
    client = TestClient(create_app(predictor, run_dir=run))
    card = client.get("/v1/model").json()
    assert card["positive_class"] == "malignant" and card["triage"] == {"classes": ["malignant"], "indices": [0]}
    rows = []
    for value in (10, 60, 120, 200, 250):
        body = client.post("/v1/predict", files={"file": (f"{value}.png", _png(value), "image/png")}).json()
        assert body["urgency"] == pytest.approx(body["probabilities"]["malignant"])
        expected = "malignant" if body["probabilities"]["malignant"] >= predictor.threshold else "normal, benign"
        assert body["decision"] == expected
        rows.append(body["urgency"])
    probs, _ = predictor.predict_array(np.stack([np.full((28, 28), v, np.uint8) for v in (10, 60, 120, 200, 250)]))
    np.testing.assert_allclose(rows, probs[:, 0], atol=1e-6)
    assert "r.urgency" in PAGE and "card.triage.classes" in PAGE  # the page sorts by the service's key


def test_a_configured_positive_class_overrides_the_catalog_and_a_typo_is_one_line(shared_data, monkeypatch):
    from medclass.config import build_config
    from medclass.data.sources import load_configured
    from medclass.training.loop import model_meta

    monkeypatch.setenv("MEDCLASS_DATA_DIR", str(shared_data / "medmnist"))
    cfg = build_config(recipe=None, overrides={"data": {"spec": "breastmnist", "positive_class": "normal, benign"}})
    dataset = load_configured(cfg.data)
    meta = model_meta(cfg, dataset)
    assert meta["positive_class"] == "normal, benign" and meta["positive_index"] == 1
    cfg.data.positive_class = "cancer"
    with pytest.raises(ConfigError) as err:
        model_meta(cfg, dataset)
    assert str(err.value) == "data.positive_class: no class named 'cancer'; classes: malignant, normal, benign"
