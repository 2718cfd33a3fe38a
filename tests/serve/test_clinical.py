"""The REST service with a model trained on clinical fields: the card lists them, predictions and explanations take
them as form fields (checked against the schema), and an image-only model refuses them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medclass.predict import Predictor


def _client(run, **kwargs):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app

    return TestClient(create_app(Predictor.from_checkpoint(run, **kwargs), run_dir=run))


def _png(seed: int = 0) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def _predict(client, data: dict[str, str] | None = None, seed: int = 0):
    return client.post("/v1/predict", files={"file": ("a.png", _png(seed)[0], "image/png")}, data=data or {})


@pytest.fixture(scope="module")
def client(small_multimodal_runs):
    return _client(small_multimodal_runs["concat"])


def test_the_card_lists_the_clinical_fields_with_their_kind(client, small_binary_run):
    card = client.get("/v1/model").json()
    assert card["clinical_fields"] == [
        {"name": "age", "kind": "numeric"},
        {"name": "sex", "kind": "categorical", "categories": ["f", "m"]},
    ]
    assert _client(small_binary_run[0]).get("/v1/model").json()["clinical_fields"] == []


def test_predictions_use_the_form_fields_as_the_predictor_does(client, small_multimodal_runs):
    predictor = Predictor.from_checkpoint(small_multimodal_runs["concat"])
    pixels = _png()[1]
    cases = [
        ({"age": "75", "sex": "m"}, {"age": 75.0, "sex": "m"}),
        ({"age": " 25.5 ", "sex": ""}, {"age": 25.5, "sex": None}),  # empty: missing
        ({"sex": "f"}, {"age": None, "sex": "f"}),  # left out: missing
        ({"age": "unknown"}, {"age": None, "sex": None}),  # a missing token
        ({}, {"age": None, "sex": None}),
    ]
    p1 = []
    for form, used in cases:
        res = _predict(client, form)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["clinical"] == used
        expected = predictor.predict_proba(pixels, tabular=[{k: v for k, v in used.items() if v is not None}])
        assert body["probabilities"]["1"] == pytest.approx(float(expected[0, 1]), abs=1e-6), form
        p1.append(body["probabilities"]["1"])
    assert p1[0] > p1[1] + 0.01, "age 75 against 25.5: the model learnt that age > 50 is positive"
    heat = client.post("/v1/explain", files={"file": ("a.png", _png()[0], "image/png")}, data={"age": "70"})
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"age": "forty"}, "clinical field 'age': 'forty' is not a number"),
        ({"age": "inf"}, "clinical field 'age': 'inf' is not a number"),
        ({"sex": "female"}, "clinical field 'sex': 'female' is not one of f, m (or leave it empty)"),
        ({"weight": "70"}, "form field 'weight': not a clinical field of this model (it takes age, sex)"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(client, form, message):
    res = _predict(client, form)
    assert res.status_code == 422 and res.json() == {"error": message}
    heat = client.post("/v1/explain", files={"file": ("a.png", _png()[0], "image/png")}, data=form)
    assert heat.status_code == 422 and heat.json() == {"error": message}


def test_a_field_given_twice_or_as_a_file_is_refused(client):
    files = [("file", ("a.png", _png()[0], "image/png")), ("age", (None, "30")), ("age", (None, "40"))]
    res = client.post("/v1/predict", files=files)
    assert res.status_code == 422 and res.json()["error"] == "clinical field 'age': given twice"
    files = [("file", ("a.png", _png()[0], "image/png")), ("sex", ("sex.txt", b"f", "text/plain"))]
    res = client.post("/v1/predict", files=files)
    assert res.status_code == 422 and res.json()["error"] == "clinical field 'sex': send a value, not a file"


def test_an_image_only_model_refuses_form_fields(small_binary_run):
    client = _client(small_binary_run[0])
    png = io.BytesIO()
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(png, format="PNG")
    res = client.post("/v1/predict", files={"file": ("a.png", png.getvalue(), "image/png")}, data={"age": "50"})
    assert res.status_code == 422 and "trained on images only" in res.json()["error"]
    ok = client.post("/v1/predict", files={"file": ("a.png", png.getvalue(), "image/png")})
    assert ok.status_code == 200 and "clinical" not in ok.json()


def test_the_onnxruntime_engine_serves_clinical_fields(small_multimodal_runs, tmp_path):
    import shutil

    run = shutil.copytree(small_multimodal_runs["film"], tmp_path / "run")
    onnx, torch_client = _client(run, engine="onnxruntime"), _client(run)
    for form in ({"age": "70", "sex": "f"}, {}):
        a, b = _predict(onnx, form).json(), _predict(torch_client, form).json()
        assert a["probabilities"]["1"] == pytest.approx(b["probabilities"]["1"], abs=1e-4)


def test_concurrent_requests_with_and_without_fields_share_a_batch(small_multimodal_runs):
    import asyncio

    from medclass.serve.app import MicroBatcher

    predictor = Predictor.from_checkpoint(small_multimodal_runs["concat"])
    calls: list[list[dict]] = []

    def probs(x, rows=None):
        calls.append(rows)
        return predictor.probs(x, tabular=rows)

    images = [predictor.prepare(_png(seed)[1]) for seed in range(3)]
    rows = [[{"age": 80}], None, [{"age": 20, "sex": "f"}]]

    async def main():
        batcher = MicroBatcher(probs, max_batch=8)
        return await asyncio.gather(*(batcher.submit(x, r) for x, r in zip(images, rows, strict=True)))

    results = asyncio.run(main())
    assert [{"age": 80}, {}, {"age": 20, "sex": "f"}] in calls, "the batch got each request's fields, {} for none"
    for x, r, got in zip(images, rows, results, strict=True):
        np.testing.assert_allclose(got, predictor.probs(x, tabular=r), atol=1e-6)
