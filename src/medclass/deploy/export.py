"""ONNX export of a trained run: one graph from raw pixels to calibrated probabilities, checked against PyTorch.

The exported graph takes ``float32`` pixels ``(N, C, ...)`` in 0..255 (any batch size) and returns
``(N, K)`` probabilities: the checkpoint's normalisation, test-time augmentation views, calibration
and output activation are all inside, so a consumer only resizes and stacks images. The run's
``model.json`` travels in the ONNX metadata (``medclass`` key), with the parity check's result and,
for int8 and bf16 models, the test AUC before and after the reduced precision.

Contrast equalisation (``data.equalize``) is not in the graph: checkpoints that use it are refused, and so
are models with clinical fields (``model.fusion``), whose tabular input the graph does not take yet.

The graph is traced (opset 17). A model tracing cannot translate (VGG's head below 224 px) goes
through ``torch.export`` instead (opset 18); either way the weights are inside the one ``.onnx`` file.

Parity: on real images of the run's data, the largest absolute probability difference between
ONNX Runtime and PyTorch must be at most ``1e-4`` in fp32, or the export fails. Int8 static
quantization (ONNX Runtime, QDQ, per-channel weights) is calibrated on training images.

bf16 stores the weights (every initializer of two or more dimensions) as bfloat16, rounded to
nearest even, each behind a ``Cast`` to float32: the file is about half the size and arithmetic
stays fp32, because ONNX Runtime's CPU provider has no bf16 convolution or matrix kernels (the
session folds the casts once at load, so speed equals fp32). Its test AUC change is measured and
stored like int8's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.errors import MedclassError
from medclass.tasks import logits_to_probs
from medclass.transforms.tta import tta_views
from medclass.trust.scaling import apply_calibration

PARITY_TOLERANCE = 1e-4
OPSET = 17
OPSET_EXPORT = 18  # the lowest opset torch.export's ONNX translation writes


class ExportError(MedclassError):
    """An export that cannot be done, or whose output does not match PyTorch's."""


class ProbabilityGraph(nn.Module):
    """Raw pixels ``(N, C, ...)`` in 0..255 -> calibrated probabilities ``(N, K)``, as inference does it."""

    def __init__(self, model: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        prep = meta["preprocessing"]
        if prep.get("equalize"):
            raise ExportError("checkpoints with contrast equalisation (data.equalize) cannot be exported to ONNX yet")
        c = int(prep["channels"])
        shape = (1, c) + (1,) * (len(prep["input_shape"]) - 1)
        self.model = model.eval()
        self.task = meta["task"]
        self.calibration = meta.get("calibration")
        self.views = list(prep.get("tta") or [])
        self.register_buffer("scale", torch.tensor(float(prep["scale"])))
        self.register_buffer("mean", torch.tensor(prep["mean"], dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(prep["std"], dtype=torch.float32).view(shape))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels * self.scale - self.mean) / self.std
        views = tta_views(x, self.views) if self.views else [x]
        logits = torch.stack([self.model(v) for v in views]).mean(0)
        return logits_to_probs(apply_calibration(logits.float(), self.calibration), self.task)


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime CPU session of ``path`` with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probs(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities from an exported model's session for a ``uint8`` or float stack ``(N, C, ...)``."""
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32)})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _set_metadata(path: Path, entries: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``medclass`` metadata of an exported model (``model.json`` content plus the export's checks)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def _quantize(fp32: Path, out: Path, calibration_images: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                np.array_split(calibration_images.astype(np.float32), max(1, len(calibration_images) // 32))
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    pre = out.with_suffix(".pre.onnx")

    # per-channel quantization warns once per 1-D weight (a BatchNorm not folded into a convolution): harmless
    def quiet(record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()

    logging.getLogger().addFilter(quiet)
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        logging.getLogger().removeFilter(quiet)
        pre.unlink(missing_ok=True)


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (``uint16``) of float values, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _bf16_weights(fp32: Path, out: Path) -> None:
    """Rewrite ``fp32`` into ``out`` with every weight of 2+ dimensions stored as bf16 behind a Cast to float."""
    import onnx
    from onnx import TensorProto, numpy_helper

    proto = onnx.load(str(fp32))
    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            kept.append(init)
            continue
        low = TensorProto(name=f"{init.name}.bf16", data_type=TensorProto.BFLOAT16, dims=init.dims)
        low.raw_data = bf16_bits(numpy_helper.to_array(init)).astype("<u2").tobytes()
        kept.append(low)
        casts.append(onnx.helper.make_node("Cast", [low.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def _to_onnx(graph: ProbabilityGraph, dummy: torch.Tensor, path: Path, out: Path) -> None:
    """Write ``graph`` to ``path`` with a dynamic batch dimension.

    Tracing comes first: it is several times faster, and its graphs are the ones benchmarked and
    quantized. Where it lacks an operator (adaptive pooling to a size that does not divide the input,
    as in VGG's head below 224 px), ``torch.export`` translates the graph instead; the two give the
    same parity on every registered model that tracing exports.

    Raises:
        ExportError: Neither exporter can translate the model (with tracing's reason).
    """
    names = {"input_names": ["image"], "output_names": ["probs"]}
    args = (graph, (dummy,), str(path))
    try:
        batch_axes = {"image": {0: "batch"}, "probs": {0: "batch"}}
        torch.onnx.export(*args, **names, dynamic_axes=batch_axes, opset_version=OPSET, dynamo=False)
    except torch.onnx.errors.OnnxExporterError as err:
        reason = str(err).splitlines()[0]
        exported = {
            "dynamic_shapes": {"pixels": {0: torch.export.Dim("batch", min=1)}},
            "opset_version": OPSET_EXPORT,
            "external_data": False,  # the weights inside the .onnx file, as tracing writes them
        }
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torch.export reports its progress on stdout
                torch.onnx.export(*args, **names, **exported, dynamo=True)
        except Exception as again:  # any failure of the second exporter is reported with the first one's reason
            raise ExportError(f"{out}: this model cannot be exported to ONNX ({reason})") from again


def export_onnx(
    model: nn.Module,
    meta: dict[str, Any],
    out: str | Path,
    *,
    check_images: np.ndarray,
    quantize: str = "none",
    calibration_images: np.ndarray | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (with ``meta``) to ``out`` and check it; returns the metadata written.

    Args:
        model: The trained network.
        meta: Its ``model.json`` content.
        out: The ``.onnx`` file.
        check_images: ``uint8`` images ``(N, C, ...)`` for the parity check.
        quantize: ``none``, ``int8`` or ``bf16`` (weights only, see the module's notes).
        calibration_images: Training images for int8 calibration.
        test: ``(images, labels)`` of the test split, to measure the AUC change of the reduced precision
            (stored as ``<quantize>_test_auc``).

    Raises:
        ExportError: Unknown quantization, equalisation or clinical fields in the checkpoint, or a parity failure.
    """
    from medclass.metrics import medmnist
    from medclass.utils.files import atomic_path

    if quantize not in ("none", "int8", "bf16"):
        raise ExportError(f"--quantize: unknown '{quantize}' (use none, int8 or bf16)")
    if meta["preprocessing"].get("tabular"):
        raise ExportError("a model with clinical fields (model.fusion) cannot be exported yet: ONNX takes images only")
    out = Path(out)
    graph = ProbabilityGraph(model, meta).eval()
    dummy = torch.as_tensor(check_images[:2], dtype=torch.float32)
    with atomic_path(out if quantize == "none" else out.with_suffix(".fp32.onnx")) as tmp:
        _to_onnx(graph, dummy, Path(tmp), out)
        fp32_path = Path(tmp)
        with torch.no_grad():
            reference = graph(torch.as_tensor(check_images, dtype=torch.float32)).numpy()
        diff = float(np.abs(onnx_probs(onnx_session(fp32_path), check_images) - reference).max())
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"{out}: ONNX output differs from PyTorch by {diff:.2e} (limit {PARITY_TOLERANCE:g})")
        entries: dict[str, Any] = {"medclass": meta, "parity_max_abs_diff": diff, "quantization": quantize}
        if quantize == "none":
            _set_metadata(fp32_path, entries)
    if quantize != "none":
        fp32 = out.with_suffix(".fp32.onnx")
        try:
            if quantize == "int8" and calibration_images is None:
                raise ExportError("int8 quantization needs calibration images")
            with atomic_path(out) as tmp:
                if quantize == "int8":
                    _quantize(fp32, Path(tmp), calibration_images)
                else:
                    _bf16_weights(fp32, Path(tmp))
                low = onnx_session(Path(tmp))
                entries["reduced_max_abs_diff"] = float(np.abs(onnx_probs(low, check_images) - reference).max())
                if test is not None:
                    images, labels = test
                    before = float(medmnist.auc(labels, onnx_probs(onnx_session(fp32), images), meta["task"]))
                    after = float(medmnist.auc(labels, onnx_probs(low, images), meta["task"]))
                    entries[f"{quantize}_test_auc"] = {"fp32": before, quantize: after, "change": after - before}
                _set_metadata(Path(tmp), entries)
        finally:
            fp32.unlink(missing_ok=True)
    return entries
