"""REST service benchmark: single-image latency over HTTP, then a bounded load test on loopback.

Starts ``medclass serve --checkpoint RUN`` in its own process, waits for ``/healthz``, then
measures from a client on the same machine, sending PNG files of the run's own test images:

* sequential: ``--requests`` single-image ``POST /v1/predict`` calls one after another; p50/p99
  milliseconds of the whole HTTP round trip (upload, decode, preprocessing, model, JSON);
* load: ``--clients`` concurrent clients posting for ``--seconds``; requests/s, p50/p99 ms and the
  number of failed requests (any status but 200).

Writes ``BENCHMARKS.md`` (``serve`` section) and ``bench/results/serve.json``.

Usage:
    python bench/serve_load.py --checkpoint runs/bench/pneumoniamnist-default-s0 [--clients 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402
from machine import cpu_description  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve.json"


def sample_pngs(run: Path, n: int) -> list[bytes]:
    """PNG bytes of the first ``n`` test images of the data the run was trained on."""
    from PIL import Image

    from medclass.config import config_from_dict, read_yaml
    from medclass.data.sources import load_configured

    cfg = config_from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml"))
    images = load_configured(cfg.data).splits["test"].images[:n].numpy()
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _ms(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def sequential(url: str, pngs: list[bytes], requests: int) -> dict[str, float]:
    import httpx

    times, failed = [], 0
    with httpx.Client(timeout=30) as client:
        for i in range(requests + 10):
            t0 = time.perf_counter()
            res = client.post(url, files={"file": ("x.png", pngs[i % len(pngs)], "image/png")})
            if i >= 10:  # the first ten warm the service up
                times.append(1000 * (time.perf_counter() - t0))
                failed += res.status_code != 200
    p50, p99 = _ms(times)
    return {"requests": requests, "p50_ms": p50, "p99_ms": p99, "failed": failed}


async def _load(url: str, pngs: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    import httpx

    times: list[float] = []
    failed = 0
    end = time.perf_counter() + seconds

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        nonlocal failed
        i = k
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                res = await client.post(url, files={"file": ("x.png", pngs[i % len(pngs)], "image/png")})
                failed += res.status_code != 200
            except httpx.HTTPError:
                failed += 1
            times.append(1000 * (time.perf_counter() - t0))
            i += clients

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(k, client) for k in range(clients)))
    wall = time.perf_counter() - t0
    p50, p99 = _ms(times)
    return {"clients": clients, "seconds": wall, "requests": len(times), "req_s": len(times) / wall,
            "p50_ms": p50, "p99_ms": p99, "failed": failed}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "bench" / "pneumoniamnist-default-s0")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    command = "python bench/serve_load.py " + " ".join(sys.argv[1:])
    pngs = sample_pngs(args.checkpoint, 64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "medclass", "serve", "--checkpoint", str(args.checkpoint), "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # one JSON line per request
    )
    try:
        import httpx

        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        url = f"{base}/v1/predict"
        seq = sequential(url, pngs, args.requests)
        print("sequential", json.dumps(seq), flush=True)
        load = asyncio.run(_load(url, pngs, args.clients, args.seconds))
        print("load", json.dumps(load), flush=True)
        healthy = httpx.get(f"{base}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command, "sequential": seq, "load": load, "healthy": healthy}, indent=2))
    side = pngs[0]
    lines = [
        f"Command: `{command}` ({cpu_description()}; {os.cpu_count()} cores; server and client on the same "
        f"machine, loopback). Requests: `POST /v1/predict` with one PNG of the run's test split "
        f"({len(side)} bytes for the first); times are the client's, whole HTTP round trip.",
        "",
        "| test | clients | requests | requests/s | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
        f"| one image at a time | 1 | {seq['requests']} | {1000 / seq['p50_ms']:.0f} (from p50) | "
        f"{seq['p50_ms']:.1f} | {seq['p99_ms']:.1f} | {seq['failed']} |",
        f"| load, {load['seconds']:.0f} s | {load['clients']} | {load['requests']} | {load['req_s']:.0f} | "
        f"{load['p50_ms']:.1f} | {load['p99_ms']:.1f} | {load['failed']} |",
        "",
        f"After the load test the service answered `/healthz`: {'yes' if healthy else 'NO'}.",
    ]
    update_section("serve", "REST service: latency and load", "\n".join(lines))


if __name__ == "__main__":
    main()
