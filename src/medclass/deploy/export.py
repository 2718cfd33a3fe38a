"""ONNX export of a trained run: one graph from raw pixels to calibrated probabilities, checked against PyTorch.

The exported graph takes ``float32`` pixels ``(N, C, ...)`` in 0..255 (input ``image``, any batch size) and
returns ``(N, K)`` probabilities (output ``probs``): the checkpoint's normalisation, test-time augmentation
views, calibration and output activation are all inside, so a consumer only resizes and stacks images. A
model with clinical fields (``model.fusion``) takes a second input, ``tabular``: the ``float32`` ``(N, T)``
vector :meth:`medclass.data.tabular.TabularSchema.transform` encodes (standardised numbers, one-hot
categories, missing indicators; the schema is ``preprocessing.tabular`` of the metadata). The run's
``model.json`` travels in the ONNX metadata (``medclass`` key), with the parity check's result and,
for int8 and bf16 models, the test AUC before and after the reduced precision.

Contrast equalisation (``data.equalize``) is not in the graph: checkpoints that use it are refused.

The graph is traced (opset 17). A model tracing cannot translate (VGG's head below 224 px) goes
through ``torch.export`` instead (opset 18); either way the weights are inside the one ``.onnx`` file.

Parity: on real images of the run's data (with their clinical fields, where the model takes them), the
largest absolute probability difference between ONNX Runtime and PyTorch must be at most ``1e-4`` in fp32,
or the export fails. Int8 static
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
    """Raw pixels ``(N, C, ...)`` in 0..255 (and encoded clinical fields ``(N, T)`` for a fusion model) ->
    calibrated probabilities ``(N, K)``, as inference does it."""

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

    def forward(self, pixels: torch.Tensor, tabular: torch.Tensor | None = None) -> torch.Tensor:
        x = (pixels * self.scale - self.mean) / self.std
        views = tta_views(x, self.views) if self.views else [x]
        fields = () if tabular is None else (tabular,)
        logits = torch.stack([self.model(v, *fields) for v in views]).mean(0)
        return logits_to_probs(apply_calibration(logits.float(), self.calibration), self.task)


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime CPU session of ``path`` with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probs(
    session: Any, images: np.ndarray, batch_size: int = 256, tabular: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities ``(N, K)`` from an exported model's session.

    Args:
        session: An ONNX Runtime session (:func:`onnx_session`).
        images: ``uint8`` or float stack ``(N, C, ...)``.
        batch_size: Images per run.
        tabular: ``float32`` ``(N, T)`` encoded clinical fields, for a graph with a ``tabular`` input.

    Raises:
        ExportError: Clinical fields for an image-only graph, or none for a graph that takes them.
    """
    names = [i.name for i in session.get_inputs()]
    if (tabular is not None) != ("tabular" in names):
        need = "takes clinical fields (a tabular input)" if "tabular" in names else "takes images only"
        raise ExportError(f"this ONNX model {need}")
    outs = []
    for i in range(0, len(images), batch_size):
        feed = {
            "image": images[i : i + batch_size],
            "tabular": None if tabular is None else tabular[i : i + batch_size],
        }
        run = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items() if k in names}
        outs.append(session.run(None, run)[0])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def check_fields(schema: dict[str, Any], n: int, seed: int = 0, missing: float = 0.25) -> np.ndarray:
    """Encoded clinical fields ``float32`` ``(n, T)`` of made-up rows, for a parity check without real rows.

    Each field is missing with probability ``missing``; numbers are drawn around the training mean (within
    three standard deviations), categories among the training ones. Row 0 has every field missing.

    Args:
        schema: ``preprocessing.tabular`` of a checkpoint.
        n: Rows.
        seed: Seed of the draws.
        missing: Share of missing cells.
    """
    from medclass.data.tabular import TabularSchema

    codes = TabularSchema.from_json(schema)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {}
        for c in codes.columns:
            if i == 0 or rng.random() < missing:
                continue
            if c.kind == "numeric":
                row[c.name] = c.mean + c.std * float(rng.uniform(-3, 3))
            else:
                row[c.name] = c.categories[int(rng.integers(len(c.categories)))]
        rows.append(row)
    return codes.transform(rows, n=n)


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


def _quantize(fp32: Path, out: Path, calibration_images: np.ndarray, calibration_tabular: np.ndarray | None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = {i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input}  # tabular_only: no image

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            parts = max(1, len(calibration_images) // 32)
            images = np.array_split(calibration_images.astype(np.float32), parts)
            fields = [None] * parts if calibration_tabular is None else np.array_split(calibration_tabular, parts)
            self.batches = iter(zip(images, fields, strict=True))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            feed = {"image": batch[0], "tabular": batch[1]}
            return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items() if k in inputs}

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


def _to_onnx(graph: ProbabilityGraph, dummy: tuple[torch.Tensor, ...], path: Path, out: Path) -> None:
    """Write ``graph`` to ``path`` with a dynamic batch dimension.

    ``dummy``: example inputs, ``(pixels,)`` or ``(pixels, tabular)``.

    Tracing comes first: it is several times faster, and its graphs are the ones benchmarked and
    quantized. Where it lacks an operator (adaptive pooling to a size that does not divide the input,
    as in VGG's head below 224 px), ``torch.export`` translates the graph instead; the two give the
    same parity on every registered model that tracing exports.

    Raises:
        ExportError: Neither exporter can translate the model (with tracing's reason).
    """
    inputs = ["image", "tabular"][: len(dummy)]
    names = {"input_names": inputs, "output_names": ["probs"]}
    args = (graph, dummy, str(path))
    try:
        batch_axes = {name: {0: "batch"} for name in [*inputs, "probs"]}
        torch.onnx.export(*args, **names, dynamic_axes=batch_axes, opset_version=OPSET, dynamo=False)
    except torch.onnx.errors.OnnxExporterError as err:
        reason = str(err).splitlines()[0]
        batch = torch.export.Dim("batch", min=1)
        exported = {
            "dynamic_shapes": {"pixels": {0: batch}, **({"tabular": {0: batch}} if len(dummy) > 1 else {})},
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
    check_tabular: np.ndarray | None = None,
    quantize: str = "none",
    calibration_images: np.ndarray | None = None,
    calibration_tabular: np.ndarray | None = None,
    test: tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (with ``meta``) to ``out`` and check it; returns the metadata written.

    Args:
        model: The trained network.
        meta: Its ``model.json`` content.
        out: The ``.onnx`` file.
        check_images: ``uint8`` images ``(N, C, ...)`` for the parity check.
        check_tabular: Their encoded clinical fields ``(N, T)``, for a model with ``preprocessing.tabular``
            (default: made-up rows with missing fields, :func:`check_fields`).
        quantize: ``none``, ``int8`` or ``bf16`` (weights only, see the module's notes).
        calibration_images: Training images for int8 calibration.
        calibration_tabular: Their encoded clinical fields (default: every field missing).
        test: ``(images, labels)`` of the test split, or ``(images, labels, tabular)`` for a model with clinical
            fields, to measure the AUC change of the reduced precision (stored as ``<quantize>_test_auc``).

    Raises:
        ExportError: Unknown quantization, equalisation in the checkpoint, clinical fields given to an image-only
            model, or a parity failure.
    """
    from medclass.metrics import medmnist
    from medclass.utils.files import atomic_path

    if quantize not in ("none", "int8", "bf16"):
        raise ExportError(f"--quantize: unknown '{quantize}' (use none, int8 or bf16)")
    schema = meta["preprocessing"].get("tabular")
    if not schema and (check_tabular is not None or calibration_tabular is not None):
        raise ExportError("clinical fields for a model trained on images only")
    if schema:
        check_tabular = _fields_or(check_tabular, schema, len(check_images), made_up=True)
        if calibration_images is not None:
            calibration_tabular = _fields_or(calibration_tabular, schema, len(calibration_images))
    out = Path(out)
    graph = ProbabilityGraph(model, meta).eval()
    inputs = (torch.as_tensor(check_images, dtype=torch.float32),)
    if check_tabular is not None:
        inputs += (torch.as_tensor(check_tabular, dtype=torch.float32),)
    with atomic_path(out if quantize == "none" else out.with_suffix(".fp32.onnx")) as tmp:
        _to_onnx(graph, tuple(t[:2] for t in inputs), Path(tmp), out)
        fp32_path = Path(tmp)
        with torch.no_grad():
            reference = graph(*inputs).numpy()
        diff = float(np.abs(onnx_probs(onnx_session(fp32_path), check_images, tabular=check_tabular) - reference).max())
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
                    _quantize(fp32, Path(tmp), calibration_images, calibration_tabular)
                else:
                    _bf16_weights(fp32, Path(tmp))
                low = onnx_session(Path(tmp))
                low_probs = onnx_probs(low, check_images, tabular=check_tabular)
                entries["reduced_max_abs_diff"] = float(np.abs(low_probs - reference).max())
                if test is not None:
                    images, labels = test[0], test[1]
                    fields = _fields_or(test[2] if len(test) > 2 else None, schema, len(images)) if schema else None
                    high = onnx_probs(onnx_session(fp32), images, tabular=fields)
                    before = float(medmnist.auc(labels, high, meta["task"]))
                    after = float(medmnist.auc(labels, onnx_probs(low, images, tabular=fields), meta["task"]))
                    entries[f"{quantize}_test_auc"] = {"fp32": before, quantize: after, "change": after - before}
                _set_metadata(Path(tmp), entries)
        finally:
            fp32.unlink(missing_ok=True)
    return entries


def _fields_or(given: np.ndarray | None, schema: dict[str, Any], n: int, *, made_up: bool = False) -> np.ndarray:
    """``given`` as ``float32`` ``(n, T)``; when ``None``, made-up rows (``made_up``) or every field missing.

    Raises:
        ExportError: ``given`` is not ``(n, T)``.
    """
    from medclass.data.tabular import TabularSchema

    codes = TabularSchema.from_json(schema)
    if given is None:
        return check_fields(schema, n) if made_up else np.tile(codes.missing_vector(), (n, 1))
    given = np.asarray(given, dtype=np.float32)
    if given.shape != (n, codes.width):
        raise ExportError(f"clinical fields of shape {given.shape} for {n} images; expected ({n}, {codes.width})")
    return given
