"""One-off check: is OpenVINO faster than ONNX Runtime here? Same exported ResNet-18 graph, 224 px, fp32, batch 32.

OpenVINO is not a dependency of medclass (it would be added as an engine only if it were faster on
this machine); install it beside the venv to run this: ``pip install --target DIR openvino`` and
``PYTHONPATH=DIR python bench/openvino_check.py``. Prints images/s of both runtimes, best of two
interleaved rounds, for OpenVINO's THROUGHPUT and LATENCY hints, with 2 threads.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def rate(run: object, batch: int, repeats: int = 5) -> float:
    """Images/s of ``run()`` on one batch, over ``repeats`` calls."""
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()  # type: ignore[operator]
    return repeats * batch / (time.perf_counter() - t0)


def main() -> None:
    try:
        import openvino as ov
    except ImportError:
        raise SystemExit("openvino is not installed (see this script's docstring)") from None
    from medclass.deploy.export import onnx_session
    from medclass.models import create_model

    model = create_model("resnet18_224", in_chans=1, num_classes=2).eval()
    x = np.random.default_rng(0).normal(size=(32, 1, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r18.onnx"
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)  # fmt: skip
        session = onnx_session(path)
        core = ov.Core()
        print(f"openvino {ov.__version__}, onnxruntime: same graph, batch {len(x)}")
        for hint in ("THROUGHPUT", "LATENCY"):
            compiled = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": 2})
            request = compiled.create_infer_request()
            runs = {
                "onnxruntime": lambda: session.run(None, {"image": x})[0],
                f"openvino {hint}": lambda r=request, c=compiled: r.infer({0: x})[c.output(0)],
            }
            diff = float(np.abs(runs["onnxruntime"]() - runs[f"openvino {hint}"]()).max())
            best = {name: rate(run, len(x)) for name, run in runs.items()}
            for name, run in runs.items():  # a second, interleaved round
                best[name] = max(best[name], rate(run, len(x)))
            print({k: round(v, 1) for k, v in best.items()}, f"max |logit difference| {diff:.1e}")


if __name__ == "__main__":
    main()
