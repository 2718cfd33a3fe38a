"""``medclass serve``: the Predictor behind a small REST service (FastAPI) with a web page.

Endpoints: ``POST /v1/predict`` and ``POST /v1/explain`` (multipart upload in field ``file``: an
image or DICOM file; for a model trained with clinical fields, one form field per field beside it, see
:mod:`medclass.serve.fields`), ``GET /v1/model`` (model card, listing the clinical fields),
``GET /v1/worklist`` (the PACS node's triage worklist, when the service is given one: studies, referrals
first, then by urgency), ``GET /healthz``, ``GET /metrics`` (Prometheus text) and ``GET /`` (the web page).
Each prediction carries ``urgency``, the triage key the page sorts a worklist by
(:func:`medclass.metrics.positive.urgency`: P(positive class) for a binary model, else the summed
probability of the model card's ``triage`` classes). With a token configured, every endpoint but
``/healthz`` and the page (which holds no data and asks for the token) needs
``Authorization: Bearer <token>`` (compared in constant time). Uploads larger than the limit get 413,
unreadable ones 400 with the reason, clinical fields the model cannot take 422 naming the field;
requests waiting longer than the timeout get 503. Concurrent predictions are gathered into
micro-batches. Logs are one JSON object per request (path, status, milliseconds, request id) and
never contain file names or contents.

Decoding uploads, predicting and explaining run in worker threads, never on the event loop, so
``/healthz`` and other requests are answered while a slow explanation runs; predictions and
explanations take turns on the model (Grad-CAM hooks its layers). The model card names the
training data by name and content hash only, never by a file-system path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import File, Request, UploadFile  # module level: FastAPI resolves the endpoints' annotations here
from starlette.concurrency import run_in_threadpool

from medclass.errors import MedclassError

LOG = logging.getLogger("medclass.serve")


class MicroBatcher:
    """Run concurrent prediction requests together, up to ``max_batch`` images a batch.

    Greedy by default (``window_s = 0``): a batch takes whatever is queued when the model is free, so a
    lone request never waits, and requests that arrive while the model runs form the next batch.
    A positive ``window_s`` also waits that long for more requests before running.
    """

    def __init__(self, predict: Any, *, max_batch: int = 32, window_s: float = 0.0) -> None:
        self.predict, self.max_batch, self.window_s = predict, max_batch, window_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0

    async def submit(self, images: Any, rows: list[dict[str, Any]] | None = None) -> np.ndarray:
        """Probabilities of a ``uint8`` stack ``(N, C, ...)``, computed within some micro-batch.

        ``rows``: the images' clinical fields, one dict per image (``predict(stack, rows)`` then gets them for the
        whole batch, ``{}``, every field missing, for the images of requests that sent none).
        """
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self.task is None or self.task.done():  # first use, or a new event loop
            self.loop, self.queue = loop, asyncio.Queue()
            self.task = loop.create_task(self._run(self.queue))
        future = loop.create_future()
        await self.queue.put((images, rows, future))
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        import torch

        while True:
            items = [await queue.get()]
            deadline = time.perf_counter() + self.window_s
            while sum(len(i[0]) for i in items) < self.max_batch:
                if not queue.empty():
                    items.append(queue.get_nowait())
                    continue
                if (left := deadline - time.perf_counter()) <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            self.batches += 1
            try:
                stack = torch.cat([i[0] for i in items])
                args: tuple[Any, ...] = (stack,)
                if any(i[1] is not None for i in items):
                    args += ([r for images, rows, _ in items for r in (rows or [{}] * len(images))],)
                probs = await asyncio.get_running_loop().run_in_executor(None, self.predict, *args)
            except Exception as err:  # noqa: BLE001 - every waiting request must get an answer
                for _, _, fut in items:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            start = 0
            for images, _, fut in items:
                if not fut.done():
                    fut.set_result(probs[start : start + len(images)])
                start += len(images)


class Metrics:
    """Counters for ``/metrics`` in the Prometheus text format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.seconds: dict[str, float] = {}
        self.images = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.seconds[path] = self.seconds.get(path, 0.0) + seconds

    def text(self) -> str:
        lines = ["# TYPE medclass_requests_total counter"]
        lines += [
            f'medclass_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())
        ]
        lines.append("# TYPE medclass_request_seconds_sum counter")
        lines += [f'medclass_request_seconds_sum{{path="{p}"}} {v:.6f}' for p, v in sorted(self.seconds.items())]
        lines += ["# TYPE medclass_images_total counter", f"medclass_images_total {self.images}"]
        return "\n".join(lines) + "\n"


def model_card(predictor: Any, run_dir: Path | None) -> dict[str, Any]:
    """What ``GET /v1/model`` returns: data, task, labels, clinical fields, metrics with CIs, thresholds, intended
    use, triage key."""
    from medclass import __version__
    from medclass.metrics.positive import positive_index, triage_spec
    from medclass.models.build import member_architectures
    from medclass.serve import fields

    meta = predictor.meta
    card: dict[str, Any] = {
        "name": meta["architecture"]["name"],
        **({"ensemble": [a["name"] for a in member_architectures(meta)]} if "deep_ensemble" in meta else {}),
        "medclass_version": __version__,
        "task": meta["task"],
        "labels": meta["label_names"],
        **({"positive_class": meta["label_names"][positive_index(meta)]} if meta["task"] == "binary" else {}),
        "triage": triage_spec(meta),
        "training_data": training_data(meta.get("dataset")),
        "input": {"shape": meta["preprocessing"]["input_shape"], "colour": meta["preprocessing"]["colour"]},
        "clinical_fields": fields.describe(getattr(predictor, "schema", None)),
        "operating_threshold": meta.get("threshold"),
        "calibration": meta.get("calibration"),
        "referral": meta.get("referral"),
        "intended_use": "Decision support for trained readers on images like the training data; not a diagnosis. "
        "Cases flagged 'refer' need a radiologist's read.",
    }
    metrics_file = run_dir / "metrics.json" if run_dir else None
    if metrics_file and metrics_file.is_file():
        test = json.loads(metrics_file.read_text()).get("splits", {}).get("test", {})
        card["test_metrics"] = {k: test.get(k) for k in ("n", "auc", "auc_ci", "acc", "acc_ci") if k in test}
    return card


def training_data(dataset: Any) -> dict[str, Any] | None:
    """The card's ``training_data``: the data's name and content hash (``md5`` or ``sha256``), nothing else.

    Checkpoints written before data were named by hash also hold ``source``, the path the data were
    read from; it is left out, as is anything else a checkpoint may add there.
    """
    if not isinstance(dataset, dict):
        return None
    return {k: dataset[k] for k in ("name", "md5", "sha256") if dataset.get(k)}


def create_app(
    predictor: Any,
    *,
    run_dir: str | Path | None = None,
    token: str | None = None,
    max_upload_mb: float = 50.0,
    timeout_s: float = 30.0,
    max_batch: int = 32,
    worklist: Any = None,
) -> Any:
    """The FastAPI application serving ``predictor`` (see the module docstring).

    ``worklist``: a callable returning the triage worklist's rows (``medclass serve --worklist`` passes the
    node's :func:`medclass.node.worklist.read_worklist`), or ``None`` (``/v1/worklist`` answers 404).
    """
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

    from medclass.metrics.positive import positive_index, urgency
    from medclass.serve import fields
    from medclass.serve.page import PAGE

    app = FastAPI(title="medclass", docs_url=None, redoc_url=None)
    metrics = Metrics()
    model_lock = threading.Lock()  # Grad-CAM hooks the model's layers: no prediction may run through it meanwhile

    schema = getattr(predictor, "schema", None)  # the clinical fields' encoding, None for an image-only model

    def locked_probs(images: Any, rows: list[dict[str, Any]] | None = None) -> Any:
        with model_lock:
            return predictor.probs(images) if rows is None else predictor.probs(images, tabular=rows)

    batcher = MicroBatcher(locked_probs, max_batch=max_batch)
    card = model_card(predictor, Path(run_dir) if run_dir else None)
    limit = int(max_upload_mb * 1024 * 1024)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        t0, rid = time.perf_counter(), uuid.uuid4().hex[:12]
        path = request.url.path
        if token and path not in ("/healthz", "/"):  # the page holds no data; it asks for the token
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                response: Any = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
                return _finish(response, path, t0, rid)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 64 * 1024:
            return _finish(JSONResponse({"error": f"upload larger than {max_upload_mb:g} MB"}, 413), path, t0, rid)
        try:
            response = await asyncio.wait_for(call_next(request), timeout_s)
        except TimeoutError:
            response = JSONResponse({"error": f"no answer within {timeout_s:g} s"}, status_code=503)
        return _finish(response, path, t0, rid)

    def _finish(response: Any, path: str, t0: float, rid: str) -> Any:
        seconds = time.perf_counter() - t0
        metrics.observe(path, response.status_code, seconds)
        response.headers["x-request-id"] = rid
        LOG.info(json.dumps({"event": "request", "path": path, "status": response.status_code,
                             "ms": round(1000 * seconds, 2), "request_id": rid}))  # fmt: skip
        return response

    def decode_upload(data: bytes, suffix: str) -> Any:
        """Uploaded bytes as the model's ``uint8`` stack ``(N, C, ...)``.

        Blocking (file I/O, DICOM or image decoding), so it runs in a worker thread. Unreadable data
        give 400 with the reader's reason, the temporary path replaced by ``upload``.
        """
        with tempfile.TemporaryDirectory(prefix="medclass-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                images, _ = predictor.load_inputs([path])
            except MedclassError as err:
                raise _HTTPProblem(400, str(err).replace(str(path), "upload")) from None
        return images

    async def read_upload(file: UploadFile) -> Any:
        """The upload as the model's ``uint8`` stack (400/413 as ``MedclassError`` subclasses' messages)."""
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise _HTTPProblem(413, f"upload larger than {max_upload_mb:g} MB")
        suffix = Path(file.filename or "").suffix.lower()[:10]
        return await run_in_threadpool(decode_upload, data, suffix)

    async def read_form(request: Request) -> dict[str, Any] | None:
        """The request's clinical fields (``None`` for an image-only model); 422 naming a field it cannot take."""
        try:
            return fields.read_fields(await request.form(), schema)
        except fields.FieldError as err:
            raise _HTTPProblem(422, str(err)) from None

    def explanation_png(images: Any, target: Any, row: dict[str, Any] | None) -> bytes:
        """Grad-CAM of ``images[0]`` (``uint8`` ``(1, C, ...)``) for class ``target``, as PNG bytes of an overlay.

        ``row``: the image's clinical fields, for a model trained with them. A volume shows its middle slice.
        Blocking (seconds on a CPU), so it runs in a worker thread, holding the model so that no prediction
        passes through Grad-CAM's hooks.
        """
        import io

        from PIL import Image

        from medclass.explain.fields import with_fields
        from medclass.explain.methods import saliency
        from medclass.explain.output import overlay
        from medclass.inference import to_input

        model = predictor.model
        if schema is not None:
            model = with_fields(model, predictor.encode_tabular([row or {}], 1))
        try:
            with model_lock:
                heat = saliency(model, predictor.task, to_input(images, predictor.prep), target, "gradcam")[0]
        except MedclassError as err:
            raise _HTTPProblem(422, str(err)) from None
        image = images[0].numpy()
        if heat.ndim == 3:
            image, heat = image[:, heat.shape[0] // 2], heat[heat.shape[0] // 2]
        buf = io.BytesIO()
        Image.fromarray(overlay(image, heat)).save(buf, format="PNG")
        return buf.getvalue()

    @app.exception_handler(_HTTPProblem)
    async def problem(request: Request, exc: _HTTPProblem) -> Any:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> Any:
        LOG.error(json.dumps({"event": "error", "path": request.url.path, "type": type(exc).__name__}))
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.post("/v1/predict", description=PREDICT_NOTES)
    async def predict(request: Request, file: UploadFile = File(...)) -> Any:  # noqa: B008 - FastAPI's style
        row = await read_form(request)
        images = await read_upload(file)
        probs = await batcher.submit(images, None if row is None else [row] * len(images))
        metrics.images += len(images)
        labels = predictor.decide(probs)
        urgent = urgency(probs, predictor.meta)
        sets, refer = predictor.referral(probs)
        names = predictor.label_names
        results = []
        for i in range(len(probs)):
            item: dict[str, Any] = {"probabilities": dict(zip(names, map(float, probs[i]), strict=True))}
            item["urgency"] = float(urgent[i])
            if predictor.task == "multilabel":
                item["decision"] = [n for n, v in zip(names, labels[i], strict=True) if v]
            else:
                item["decision"] = names[int(labels[i])]
            if sets is not None:
                item["prediction_set"] = [n for n, v in zip(names, sets[i], strict=True) if v]
                item["refer"] = bool(refer[i])
            results.append(item)
        body = {"model": card["name"], "threshold": predictor.threshold, **results[0]}
        if row is not None:
            body["clinical"] = fields.echo(row, schema)  # the fields the model used (None: missing)
        if len(results) > 1:  # a multi-frame file or volume stack: one result per image
            body["images"] = results
        return body

    @app.post("/v1/explain", description=EXPLAIN_NOTES)
    async def explain(request: Request, file: UploadFile = File(...)) -> Any:  # noqa: B008
        from medclass.explain.methods import default_targets

        row = await read_form(request)
        images = (await read_upload(file))[:1]
        probs = await batcher.submit(images, None if row is None else [row])
        pos = positive_index(predictor.meta)
        target = default_targets(probs, predictor.task, predictor.threshold, positive_index=pos)
        return Response(await run_in_threadpool(explanation_png, images, target, row), media_type="image/png")

    @app.get("/v1/model")
    async def model() -> Any:
        return card

    @app.get("/v1/worklist")
    async def worklist_rows() -> Any:
        if worklist is None:
            return JSONResponse({"error": "no worklist: start the service with --worklist NODE_STATE"}, 404)
        return {"studies": await run_in_threadpool(worklist)}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.text())

    @app.get("/")
    async def page() -> Any:
        return HTMLResponse(PAGE)

    app.state.batcher = batcher
    return app


FIELD_NOTES = (
    "A model trained with clinical fields (GET /v1/model lists them under clinical_fields, with each field's "
    "kind and a categorical field's categories) takes them as further form fields, one per field, named as "
    "the field; a field left out or empty is missing. A value that is not a number (numeric field) or not a "
    "known category, or a form field the model does not take, gives 422 naming the field."
)
PREDICT_NOTES = (
    "Multipart form: `file` (an image or DICOM file) and the clinical fields. Returns the probabilities, the "
    "decision at the operating threshold, `urgency` and, for a model with clinical fields, `clinical`: the "
    "value used for each field (null: missing). " + FIELD_NOTES
)
EXPLAIN_NOTES = "Multipart form as for /v1/predict; returns a Grad-CAM overlay (PNG) of the decision. " + FIELD_NOTES


class _HTTPProblem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def openapi_spec() -> dict[str, Any]:
    """The service's OpenAPI document (it does not depend on the model; ``docs/openapi.json`` holds a copy)."""
    from types import SimpleNamespace

    stub = SimpleNamespace(
        meta={
            "architecture": {"name": "model"},
            "task": "binary",
            "label_names": ["negative", "positive"],
            "preprocessing": {"input_shape": [1, 28, 28], "colour": "grey"},
        },
        probs=lambda x: x,
        label_names=["negative", "positive"],
        task="binary",
        threshold=None,
    )
    return create_app(stub).openapi()
