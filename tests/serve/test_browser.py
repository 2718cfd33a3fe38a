"""The web page in a real headless Chromium: token, model card, one upload with heat map, a triage list, and the
clinical fields of a multimodal model filled in and sent with the image.

Chromium is driven through chromedriver's W3C WebDriver HTTP protocol (a few JSON calls over httpx),
so no browser-automation package is needed. ``.ci/run`` installs ``chromium`` and ``chromium-driver``
when they are missing. Under ``CI`` a missing browser fails this test (with the reason ``.ci/run`` recorded in
``MEDCLASS_NO_BROWSER``), so a green CI run means the page was driven in a real browser; elsewhere it is
skipped with that reason. A screenshot of
the page with its triage list is saved as a test artifact (``$MEDCLASS_ARTIFACTS``, default
``runs/test-artifacts/``).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
TOKEN = "browser-secret"


def _browser() -> tuple[str, str]:
    """Paths of chromedriver and the Chromium binary, or a skip/fail explaining what is missing."""
    driver = shutil.which("chromedriver")
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if driver and chrome:
        return driver, chrome
    why = os.environ.get("MEDCLASS_NO_BROWSER") or "chromium and chromedriver are not installed"
    if os.environ.get("CI"):
        pytest.fail(f"the browser test must run in CI: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if value := check():
                return value
        except Exception:  # noqa: BLE001 - the page may still be loading
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class WebDriver:
    """The handful of W3C WebDriver commands the test needs, on one session."""

    def __init__(self, port: int, chrome: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": chrome, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        res = self.http.request(method, path, json=body)
        value = res.json()["value"]
        if res.status_code != 200:
            raise RuntimeError(f"webdriver {path}: {value.get('message', value)}")
        return value

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", self._s("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def text(self, css: str) -> str:
        return self._call("GET", self._s(f"/element/{self.find(css)}/text"))

    def type(self, css: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def js(self, script: str) -> Any:
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": []})

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self._call("GET", self._s("/screenshot")))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def quit(self) -> None:
        self.http.delete(self._s(""))
        self.http.close()


@contextmanager
def _served(run: Path, token: str | None) -> Iterator[tuple[WebDriver, str]]:
    """``(driver, url)``: the service of ``run`` on a free port and a headless Chromium session."""
    driver_path, chrome = _browser()
    import uvicorn

    from medclass.predict import Predictor
    from medclass.serve.app import create_app

    app = create_app(Predictor.from_checkpoint(run), run_dir=run, token=token)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "the service to start")
    dport = _free_port()
    proc = subprocess.Popen([driver_path, f"--port={dport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        _wait(lambda: httpx.get(f"http://127.0.0.1:{dport}/status").json()["value"]["ready"], "chromedriver")
        wd = WebDriver(dport, chrome)
        try:
            yield wd, f"http://127.0.0.1:{port}/"
        finally:
            wd.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(small_binary_run) -> Iterator[tuple[WebDriver, str]]:
    """``(driver, url)``: the service on a free port (with a bearer token) and a headless Chromium session."""
    with _served(small_binary_run[0], TOKEN) as served:
        yield served


@pytest.fixture(scope="module")
def clinical_page(small_multimodal_runs) -> Iterator[tuple[WebDriver, str]]:
    """``(driver, url)``: the service of a model trained with clinical fields ``age`` and ``sex``, without a token."""
    with _served(small_multimodal_runs["concat"], None) as served:
        yield served


def _png(path: Path, value: int) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_page_needs_the_token_then_shows_a_result_a_heat_map_and_a_triage_list(page, small_binary_run, tmp_path):
    from medclass.predict import Predictor

    wd, url = page
    wd.get(url)
    assert "401" in _wait(lambda: "401" in wd.text("#card") and wd.text("#card"), "the card to refuse without token")
    wd.type("#token", TOKEN)
    wd.js("document.getElementById('token').dispatchEvent(new Event('change'))")
    card = _wait(lambda: "binary" in wd.text("#card") and wd.text("#card"), "the model card")
    threshold = Predictor.from_checkpoint(small_binary_run[0]).meta["threshold"]
    assert "labels 0, 1" in card and f"operating threshold {threshold:.3f}" in card

    dark, bright = _png(tmp_path / "dark.png", 20), _png(tmp_path / "bright.png", 230)
    wd.type("#files", str(dark))
    decision = _wait(lambda: wd.text("#decision"), "the decision for one image")
    pred = Predictor.from_checkpoint(small_binary_run[0])
    probs, _ = pred.predict_array(np.full((16, 16), 20, np.uint8))
    shown = wd.js("return [...document.querySelectorAll('#single td')].map((td) => td.textContent)")
    assert shown[shown.index("1") + 1] == f"{probs[0, 1]:.3f}"  # the page shows the service's probability
    assert decision.startswith("Decision: ")
    loaded = "const i = document.querySelector('img.heat'); return i && i.complete && i.naturalWidth"
    heat = _wait(lambda: wd.js(loaded), "the heat map")
    assert heat > 0

    wd.js("document.getElementById('files').value = ''")
    wd.type("#files", f"{dark}\n{bright}")
    rows = _wait(
        lambda: wd.js(
            "const t = document.getElementById('triage'); if (t.hidden) return null;"
            "return [...t.tBodies[0].rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent])"
        ),
        "the triage list",
    )
    assert sorted(name for name, _ in rows) == ["bright.png", "dark.png"]
    p = [float(v) for _, v in rows]
    assert p == sorted(p, reverse=True)  # most urgent first
    expected, _ = pred.predict_array(np.stack([np.full((16, 16), v, np.uint8) for v in (20, 230)]))
    assert sorted(p) == sorted(round(float(x), 3) for x in expected[:, 1])
    artifacts = Path(os.environ.get("MEDCLASS_ARTIFACTS", Path(__file__).parents[2] / "runs" / "test-artifacts"))
    png = wd.screenshot(artifacts / "browser-triage.png")
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size[0] > 100


def test_page_sends_the_clinical_fields_with_the_image(clinical_page, small_multimodal_runs, tmp_path):
    from medclass.predict import Predictor

    wd, url = clinical_page
    wd.get(url)
    _wait(lambda: "clinical fields age, sex" in wd.text("#card"), "the model card with its clinical fields")
    inputs = wd.js(
        "return [...document.querySelectorAll('#fields [data-field]')].map((e) => [e.dataset.field, e.type])"
    )
    assert inputs == [["age", "number"], ["sex", "select-one"]]
    options = wd.js("return [...document.querySelectorAll('#fields select option')].map((o) => [o.value, o.text])")
    assert options == [["", "unknown"], ["f", "f"], ["m", "m"]]

    pixels = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    path = tmp_path / "lesion.png"
    Image.fromarray(pixels).save(path)
    predictor = Predictor.from_checkpoint(small_multimodal_runs["concat"])
    shown = []
    for age, sex, used in (
        ("75", "m", "age 75, sex m"),
        ("25", "", "age 25, sex unknown"),
        ("", "f", "age unknown, sex f"),
    ):
        wd.js("document.querySelector('[data-field=age]').value = ''")
        if age:
            wd.type("[data-field=age]", age)  # typed, as a user would
        wd.js(f"document.querySelector('[data-field=sex]').value = '{sex}'")
        wd.js("document.getElementById('files').value = ''")
        wd.type("#files", str(path))
        text = _wait(lambda u=used: u in wd.text("#used") and wd.text("#used"), f"the result for {used}")
        assert text == f"Clinical fields used: {used}"  # the server's echo of what it received
        cells = wd.js("return [...document.querySelectorAll('#single td')].map((td) => td.textContent)")
        fields = {k: v for k, v in (("age", age), ("sex", sex)) if v}
        expected = predictor.predict_proba(pixels, tabular=[fields])
        assert cells[cells.index("1") + 1] == f"{expected[0, 1]:.3f}", used
        shown.append(float(cells[cells.index("1") + 1]))
    assert shown[0] > shown[1], "age 75 against 25: the fields reached the model"
    artifacts = Path(os.environ.get("MEDCLASS_ARTIFACTS", Path(__file__).parents[2] / "runs" / "test-artifacts"))
    assert wd.screenshot(artifacts / "browser-clinical.png").startswith(b"\x89PNG")
