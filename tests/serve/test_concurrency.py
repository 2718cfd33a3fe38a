"""Slow work (decoding an upload, an explanation) runs in worker threads: the event loop keeps answering."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from medclass.predict import Predictor

SLOW = 1.5  # seconds the patched step sleeps; /healthz must answer within a small part of it


@pytest.fixture(scope="module")
def run(small_binary_run):
    return small_binary_run[0]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _slowed(real, started: threading.Event, at: list[float]):
    def slow(*args, **kwargs):
        at.append(time.perf_counter())
        started.set()
        time.sleep(SLOW)  # blocking, as a Grad-CAM pass or a large DICOM decode is
        return real(*args, **kwargs)

    return slow


@pytest.mark.parametrize("step", ["explain", "decode"])
def test_health_answers_while_slow_work_runs(run, monkeypatch, step):
    import httpx

    from medclass.explain import methods
    from medclass.serve.app import create_app

    predictor = Predictor.from_checkpoint(run)
    started, at = threading.Event(), []
    if step == "explain":
        monkeypatch.setattr(methods, "saliency", _slowed(methods.saliency, started, at))
    else:
        monkeypatch.setattr(predictor, "load_inputs", _slowed(predictor.load_inputs, started, at))
    app = create_app(predictor, run_dir=run)
    path = "/v1/explain" if step == "explain" else "/v1/predict"

    async def scenario() -> tuple[float, float, httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:

            async def slow_request() -> tuple[httpx.Response, float]:
                res = await client.post(path, files={"file": ("a.png", _png(), "image/png")})
                return res, time.perf_counter()

            slow_task = asyncio.create_task(slow_request())
            deadline = time.perf_counter() + 60
            while not started.is_set() and time.perf_counter() < deadline:  # wait until the slow step runs
                await asyncio.sleep(0.005)
            health, card = await asyncio.gather(client.get("/healthz"), client.get("/v1/model"))
            answered = time.perf_counter()
            slow_res, finished = await slow_task
        return answered, finished, health, card, slow_res

    answered, finished, health, card, slow_res = asyncio.run(scenario())
    assert at, "the slow step never ran"
    assert slow_res.status_code == 200, slow_res.text
    assert health.json() == {"status": "ok"} and card.status_code == 200
    assert finished - at[0] >= SLOW  # the slow request really took that long
    assert answered - at[0] < SLOW / 3, f"/healthz took {answered - at[0]:.2f} s behind a {SLOW} s {step}"
    if step == "explain":
        assert slow_res.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(slow_res.content)).size[0] > 0
