"""The REST service: predictions, explanations, model card, auth, limits, micro-batching, metrics, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from medclass.predict import Predictor


@pytest.fixture(scope="module")
def run(small_binary_run):
    return small_binary_run[0]


def _client(run, **kwargs):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app

    return TestClient(create_app(Predictor.from_checkpoint(run), run_dir=run, **kwargs))


def _png(value: int = 120, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_explain_card_and_health(run, make_dicom, tmp_path, caplog):
    client = _client(run)
    with caplog.at_level(logging.INFO, logger="medclass.serve"):
        res = client.post("/v1/predict", files={"file": ("patient-name.png", _png(), "image/png")})
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body["probabilities"]) == {"0", "1"} and abs(sum(body["probabilities"].values()) - 1) < 1e-5
    assert body["decision"] in ("0", "1") and isinstance(body["refer"], bool) and body["prediction_set"]
    expected, _ = Predictor.from_checkpoint(run).predict_array(np.full((16, 16), 120, np.uint8))
    assert body["probabilities"]["1"] == pytest.approx(float(expected[0, 1]), abs=1e-6)
    logs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "medclass.serve"]
    assert logs and logs[0]["path"] == "/v1/predict" and logs[0]["status"] == 200
    assert "patient-name" not in caplog.text  # file names never reach the logs
    dcm = make_dicom(tmp_path / "x.dcm", (np.arange(32 * 32).reshape(32, 32) % 4096).astype(np.uint16))
    assert client.post("/v1/predict", files={"file": ("x", dcm.read_bytes())}).status_code == 200  # DICOM, no suffix
    heat = client.post("/v1/explain", files={"file": ("a.png", _png(), "image/png")})
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    card = client.get("/v1/model").json()
    assert card["labels"] == ["0", "1"] and "auc" in card["test_metrics"] and card["intended_use"]
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "Drop an image" in page.text
    text = client.get("/metrics").text
    assert 'medclass_requests_total{path="/v1/predict",status="200"} 2' in text and "medclass_images_total 2" in text


def test_token_limits_and_bad_files(run):
    client = _client(run, token="s3cret", max_upload_mb=0.001)
    assert client.get("/v1/model").status_code == 401
    assert client.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/model", headers=auth).status_code == 200
    assert client.get("/healthz").status_code == 200  # open for load balancers
    assert client.get("/").status_code == 200 and client.get("/metrics").status_code == 401  # the page asks for it
    big = client.post("/v1/predict", files={"file": ("a.png", _png(size=256) + b"\0" * 5000)}, headers=auth)
    assert big.status_code == 413
    bad = client.post("/v1/predict", files={"file": ("a.png", b"not an image")}, headers=auth)
    assert bad.status_code == 400 and "upload" in bad.json()["error"] and "/tmp" not in bad.json()["error"]
    wrong_type = client.post("/v1/predict", json={"image": [1, 2, 3]}, headers=auth)
    assert wrong_type.status_code == 422  # no multipart 'file' field
    assert client.get("/healthz").json() == {"status": "ok"}  # still healthy after all of that


def test_concurrent_requests_share_micro_batches(run):
    from medclass.serve.app import MicroBatcher

    predictor = Predictor.from_checkpoint(run)
    calls = []

    def probs(x):
        calls.append(len(x))
        return predictor.probs(x)

    images = [predictor.prepare(np.full((16, 16), v, np.uint8)) for v in range(0, 200, 20)]
    for window in (0.05, 0.0):  # waiting for more, and greedy (whatever is queued when the model is free)
        batcher = MicroBatcher(probs, max_batch=64, window_s=window)
        calls.clear()

        async def main(b=batcher):
            return await asyncio.gather(*(b.submit(x) for x in images))

        results = asyncio.run(main())
        assert sum(calls) == len(images) and len(calls) < len(images)  # gathered, not one call per request
        for x, p in zip(images, results, strict=True):
            np.testing.assert_allclose(p, predictor.probs(x), atol=1e-6)

    calls.clear()
    asyncio.run(MicroBatcher(probs, window_s=0.0).submit(images[0]))
    assert calls == [1]  # a lone request runs at once, alone


def test_checked_in_openapi_spec_is_current():
    from pathlib import Path

    from medclass.serve.app import openapi_spec

    spec = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    regenerate = "python -m medclass.serve.openapi > docs/openapi.json"
    assert spec == json.loads(json.dumps(openapi_spec())), f"docs/openapi.json is stale: {regenerate}"
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/metrics"} <= set(spec["paths"])
