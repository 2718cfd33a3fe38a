"""``Predictor``: the one object behind ``medclass predict`` (and later the REST service and PACS bridge).

It applies the checkpoint's stored preprocessing and operating threshold, so inference never guesses.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass.checkpoint import load_model
from medclass.data.dataset import resize_images, to_channels_first
from medclass.errors import DataError
from medclass.inference import predict_probs
from medclass.io.images import is_image_file, read_image, to_uint8


@dataclass
class Prediction:
    """Predictions for a batch of images.

    Attributes:
        probs: ``(N, K)`` class probabilities (binary: ``[P(negative), P(positive)]``).
        labels: ``(N,)`` predicted class index, or ``(N, L)`` 0/1 for multi-label, at the operating threshold.
        sources: ``(N,)`` where each image came from (file name, or ``file[index]`` for arrays).
        sets: ``(N, K)`` conformal prediction-set membership at the checkpoint's ``alpha``, or ``None``
            (multi-label, or a checkpoint without conformal thresholds).
        refer: ``(N,)`` True where the case should go to a radiologist (see
            :func:`medclass.evaluate.referral_flags`), or ``None``.
    """

    probs: np.ndarray
    labels: np.ndarray
    sources: list[str]
    sets: np.ndarray | None = None
    refer: np.ndarray | None = None

    def records(self, label_names: Sequence[str], task: str) -> list[dict[str, Any]]:
        """One dict per image: ``source``, ``probs`` by class name, ``label``, and ``set``/``refer`` when known."""
        out = []
        for i, (src, p, lab) in enumerate(zip(self.sources, self.probs, self.labels, strict=True)):
            rec: dict[str, Any] = {"source": src, "probs": {n: float(v) for n, v in zip(label_names, p, strict=True)}}
            if task == "multilabel":
                rec["label"] = [n for n, v in zip(label_names, lab, strict=True) if v]
            else:
                rec["label"] = label_names[int(lab)]
            if self.sets is not None and self.refer is not None:
                rec["set"] = [n for n, v in zip(label_names, self.sets[i], strict=True) if v]
                rec["refer"] = bool(self.refer[i])
            out.append(rec)
        return out


class Predictor:
    """Run a trained model on arrays or files.

    Args:
        model: The network (eval mode).
        meta: Its checkpoint metadata (``model.json``).
        batch_size: Images per forward pass.
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any], batch_size: int = 256, session: Any = None) -> None:
        self.model = model.eval()
        self.session = session  # an ONNX Runtime session of the exported graph, or None for PyTorch
        self.meta = meta
        self.task: str = meta["task"]
        self.label_names: list[str] = list(meta["label_names"])
        self.prep: dict[str, Any] = meta["preprocessing"]
        self.threshold = meta.get("threshold")
        self.calibration: dict[str, Any] | None = meta.get("calibration")
        self.batch_size = batch_size
        self.schema = None  # the clinical fields' encoding, for a model trained with them
        if self.prep.get("tabular"):
            from medclass.data.tabular import TabularSchema

            self.schema = TabularSchema.from_json(self.prep["tabular"])

    @classmethod
    def from_checkpoint(
        cls,
        run_dir: str | Path,
        *,
        ensemble: Sequence[str | Path] = (),
        mc_samples: int = 0,
        engine: str = "torch",
        onnx_file: str | Path | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load a run folder written by ``medclass train``.

        Args:
            run_dir: The run.
            ensemble: Further runs whose calibrated probabilities are averaged with this one's
                (a deep ensemble); they must share task, labels and preprocessing.
            mc_samples: Monte Carlo dropout passes per model (0 = off).
            engine: ``torch``, or ``onnxruntime`` to run the exported graph (``onnx_file``, default
                ``RUN/model.onnx``, exported on first use with a parity check on random images, and made-up
                clinical fields for a model that takes them).
            onnx_file: The ONNX file for the ``onnxruntime`` engine (e.g. ``model.int8.onnx``).
            **kwargs: Passed to the constructor.

        With ``ensemble`` or ``mc_samples``, the model is a
        :class:`~medclass.trust.ensemble.ProbabilityAverage`; its operating threshold is the mean of
        the members' (``medclass evaluate`` refits it, the calibration and the conformal sets on
        validation), and predictions carry no prediction sets until then.
        """
        model, meta = load_model(run_dir)
        if engine not in ("torch", "onnxruntime"):
            raise DataError(f"--engine: unknown engine '{engine}' (use torch or onnxruntime)")
        if meta["preprocessing"].get("tabular") and (ensemble or mc_samples):
            raise DataError(f"{run_dir}: a model with clinical fields runs alone (no ensemble or MC dropout) for now")
        if engine == "onnxruntime":
            if ensemble or mc_samples:
                raise DataError("--engine onnxruntime runs one exported model; ensembles and MC dropout need torch")
            return cls(model, meta, session=_onnx_session(Path(run_dir), model, meta, onnx_file), **kwargs)
        if not ensemble and not mc_samples:
            return cls(model, meta, **kwargs)
        from medclass.trust.ensemble import ProbabilityAverage

        loaded = [(model, meta)] + [load_model(r) for r in ensemble]
        for other, (_, m) in zip(ensemble, loaded[1:], strict=True):
            for key in ("task", "label_names", "preprocessing", "positive_index"):
                if m[key] != meta[key]:
                    raise DataError(f"{other}: its {key} differs from {run_dir}'s; it cannot join the ensemble")
        wrapper = ProbabilityAverage(
            [m for m, _ in loaded], [m.get("calibration") for _, m in loaded], meta["task"], mc_samples=mc_samples
        )
        thresholds = [m.get("threshold") for _, m in loaded]
        mean_t = None
        if meta["task"] in ("binary", "multilabel") and all(t is not None for t in thresholds):
            mean_t = np.mean(np.asarray(thresholds, dtype=float), axis=0).tolist()
        emeta = {k: v for k, v in meta.items() if k not in ("calibration", "conformal", "referral")}
        emeta.update(
            threshold=mean_t, ensemble={"members": [str(run_dir), *map(str, ensemble)], "mc_samples": mc_samples}
        )
        return cls(wrapper, emeta, **kwargs)

    @property
    def clinical_fields(self) -> list[str]:
        """The clinical fields the model takes (``data.tabular`` of its run); empty for an image-only model."""
        return [] if self.schema is None else self.schema.names

    def encode_tabular(self, tabular: Any, n: int) -> torch.Tensor | None:
        """Clinical fields of ``n`` images as the model's ``(n, T)`` input (``None`` for an image-only model).

        Args:
            tabular: A list of ``n`` dicts (field -> value), a mapping field -> ``n`` values, or ``None``; absent
                fields, ``None``, NaN and empty text are missing (an image without fields: every field missing).
            n: Number of images.

        Raises:
            DataError: Fields for an image-only model, unknown fields, a count other than ``n``, unreadable values.
        """
        if self.schema is None:
            if tabular is not None:
                raise DataError("this model was trained on images only; it takes no clinical fields")
            return None
        return torch.from_numpy(self.schema.transform(tabular, n=n))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` or ``(C, D, H, W)`` the model was trained on."""
        return tuple(self.prep["input_shape"])

    def prepare(self, images: np.ndarray, *, where: str = "input") -> torch.Tensor:
        """Bring an image stack to the model's channels and size as ``uint8`` ``(N, C, ...)``.

        Args:
            images: ``(H, W)``, ``(H, W, C)``, ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` (or the
                3D forms), any dtype.
            where: Name used in error messages.
        """
        c, spatial = self.input_shape[0], self.input_shape[1:]
        arr = to_uint8(np.asarray(images))
        dims = len(spatial)
        if arr.ndim == dims or (arr.ndim == dims + 1 and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3)):
            arr = arr[None]  # a single image
        if arr.ndim == dims + 2 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            pass  # already (N, C, ...)
        else:
            arr = to_channels_first(arr, spatial_dims=dims, where=where)
        x = torch.from_numpy(np.require(arr, requirements=["C", "W"]))  # PIL arrays are read-only
        if x.shape[1] != c:
            if c == 1:
                x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, *([1] * dims))).sum(1, keepdim=True)
                x = x.round().clamp(0, 255).to(torch.uint8)
            else:
                x = x.expand(-1, 3, *x.shape[2:]).contiguous()
        if tuple(x.shape[2:]) != tuple(spatial):
            if len(set(spatial)) != 1:
                raise DataError(f"{where}: cannot resize to non-square input {spatial}")
            x = resize_images(x, spatial[0])
        return x

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Labels from probabilities at the stored operating threshold (argmax for multi-class).

        Binary: the checkpoint's positive class (``positive_index``, 1 for older checkpoints) when its
        probability reaches the threshold, else the other class.
        """
        if self.task == "binary":
            from medclass.metrics.positive import binary_decision, positive_index

            return binary_decision(probs, self.threshold, positive_index(self.meta))
        if self.task == "multilabel":
            t = np.full(probs.shape[1], 0.5) if self.threshold is None else np.asarray(self.threshold, dtype=float)
            t = np.where(np.isnan(t), 0.5, t)
            return (probs >= t).astype(np.int64)
        return probs.argmax(1)

    def referral(self, probs: np.ndarray, *, alpha: float | None = None) -> tuple[Any, Any]:
        """``(sets, refer)`` for calibrated probabilities (``(None, None)`` when the checkpoint has no thresholds)."""
        from medclass.evaluate import referral_flags

        return referral_flags(self.meta, probs, alpha=alpha)

    def predict_array(
        self, images: np.ndarray, *, where: str = "input", tabular: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probs (N, K), labels)`` for an image array (with clinical fields as :meth:`encode_tabular` takes)."""
        probs = self.probs(self.prepare(images, where=where), tabular=tabular)
        return probs, self.decide(probs)

    def probs(self, x: torch.Tensor, tabular: Any = None) -> np.ndarray:
        """Calibrated probabilities ``(N, K)`` of a prepared ``uint8`` stack, on the chosen engine.

        ``tabular``: the images' clinical fields (see :meth:`encode_tabular`), for a model trained with them.
        """
        fields = self.encode_tabular(tabular, int(x.shape[0]))
        if self.session is not None:
            from medclass.deploy.export import onnx_probs

            return onnx_probs(
                self.session, x.numpy(), self.batch_size, tabular=None if fields is None else fields.numpy()
            )
        return predict_probs(
            self.model, x, self.task, self.prep, self.batch_size, calibration=self.calibration, tabular=fields
        )

    def load_inputs(self, inputs: Sequence[str | Path]) -> tuple[torch.Tensor, list[str]]:
        """Read image files, folders, ``.npy`` and ``.npz`` inputs as the model's ``uint8`` ``(N, C, ...)`` stack.

        Returns:
            ``(images, sources)``: the stack and where each image came from.
        """
        arrays, sources = [], []
        for item in inputs:
            for arr, name in _read_input(Path(item), self.prep.get("decode", {})):
                x = self.prepare(arr, where=name)
                arrays.append(x)
                sources.extend([name] if x.shape[0] == 1 else [f"{name}[{i}]" for i in range(x.shape[0])])
        if not arrays:
            raise DataError(f"no images found in {', '.join(map(str, inputs))}")
        return torch.cat(arrays), sources

    def _predict_any(self, x: Any, *, alpha: float | None = None, tabular: Any = None) -> Prediction:
        """Predict for an image array or for file inputs (see :meth:`predict_proba`)."""
        if isinstance(x, str | Path) or (isinstance(x, Sequence) and not isinstance(x, np.ndarray)):
            return self.predict_paths([x] if isinstance(x, str | Path) else list(x), alpha=alpha, tabular=tabular)
        if isinstance(tabular, str | Path):
            raise DataError(f"{tabular}: a clinical CSV is matched to image files by name; these images are an array")
        arr = np.asarray(x)
        stack = self.prepare(as_uint8_images(arr, len(self.input_shape) - 1), where="array")
        probs = self.probs(stack, tabular=tabular)
        sets, refer = self.referral(probs, alpha=alpha)
        return Prediction(probs, self.decide(probs), [f"array[{i}]" for i in range(len(probs))], sets, refer)

    def predict_proba(self, x: Any, *, tabular: Any = None) -> np.ndarray:
        """Calibrated class probabilities, as scikit-learn's ``predict_proba``.

        Args:
            x: Images as an array, ``(N, H, W)`` or ``(N, H, W, C)`` for 2D models and ``(N, D, H, W)`` for 3D
                ones (a single image without ``N`` also works); ``uint8``, or floats in 0..1 or 0..255 (other
                floats are min-max scaled per image). Or a file path (image, DICOM, NIfTI, folder, ``.npy``,
                ``.npz``) or a list of them.
            tabular: Clinical fields, for a model trained with them (:attr:`clinical_fields`): a list of one
                dict per image (``{"age": 55, "sex": "male"}``), or a mapping field -> one value per image; fields
                left out, ``None`` or empty are missing, and without ``tabular`` every field is missing. For file
                inputs also a CSV file whose ``path``/``file`` column names the images (matched by file name).

        Returns:
            ``(N, C)`` probabilities, columns in the order of :attr:`label_names`.
        """
        return self._predict_any(x, tabular=tabular).probs

    def predict(self, x: Any, *, alpha: float | None = None, tabular: Any = None) -> list[dict[str, Any]]:
        """Per-image records, as ``medclass predict`` writes them (one row of its CSV each).

        Args:
            x: As for :meth:`predict_proba`.
            alpha: Miss rate of the conformal prediction sets (default: the checkpoint's).
            tabular: Clinical fields, as for :meth:`predict_proba`.

        Returns:
            One dict per image: ``source``, ``probs`` (class name to probability), ``label`` (the decision at the
            operating threshold: a class name, or a list of names for multi-label), and, when the checkpoint has
            conformal thresholds, ``set`` (class names) and ``refer`` (bool).
        """
        return self._predict_any(x, alpha=alpha, tabular=tabular).records(self.label_names, self.task)

    def predict_paths(
        self, inputs: Sequence[str | Path], *, alpha: float | None = None, tabular: Any = None
    ) -> Prediction:
        """Predict for image files, folders of images, ``.npy`` arrays and ``.npz`` files.

        ``alpha`` overrides the checkpoint's level for the conformal prediction sets. ``tabular``: the images'
        clinical fields (as for :meth:`predict_proba`, one entry per image found), or a CSV file of them matched
        by file name (:func:`clinical_for`).
        """
        x, sources = self.load_inputs(inputs)
        if isinstance(tabular, str | Path):
            tabular = clinical_for(sources, tabular, self.clinical_fields)
        probs = self.probs(x, tabular=tabular)
        sets, refer = self.referral(probs, alpha=alpha)
        return Prediction(probs, self.decide(probs), sources, sets, refer)


def clinical_for(sources: Sequence[str], csv_file: str | Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    """One dict of clinical fields per source, from a CSV matched by file name (``medclass predict --clinical``).

    A source ``dir/a.npy[3]`` (an image of a stack) takes the row of ``a.npy``. Sources the CSV does not name get
    every field missing; that, and fields the CSV lacks, are logged as warnings. Only ``fields`` are taken.

    Raises:
        DataError: The CSV cannot be read (see :func:`medclass.data.tabular.read_clinical_csv`), or
            clinical fields for a model trained without them.
    """
    import logging
    import re

    from medclass.data.tabular import read_clinical_csv

    if not fields:
        raise DataError(f"{csv_file}: this model was trained on images only; it takes no clinical fields")
    table = read_clinical_csv(csv_file)
    log = logging.getLogger(__name__)
    columns = {k for row in table.values() for k in row}
    if absent := [f for f in fields if f not in columns]:
        log.warning("%s: no column for %s: treated as missing", csv_file, ", ".join(absent))
    out, unmatched = [], 0
    for src in sources:
        name = Path(re.sub(r"(\[\d+\])$", "", src)).name.split(":")[0]  # "a.npy[3]" and "b.npz:images" -> files
        row = table.get(name)
        unmatched += row is None
        out.append({f: v for f, v in (row or {}).items() if f in fields})
    if unmatched:
        log.warning("%s: %d of %d images have no row: their clinical fields are missing", csv_file, unmatched, len(out))
    return out


def as_uint8_images(arr: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``uint8`` pixels from an image array: ``uint8`` as is, floats in 0..1 times 255, floats in 0..255 rounded, any
    other range min-max scaled per image (the first axis is the image axis when there is one).

    Args:
        arr: ``(N, *spatial[, C])`` or one image.
        spatial_dims: 2 or 3.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"array: cannot read {arr.dtype} values as pixels")
    a = arr.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo >= 0 and hi <= 1 and np.issubdtype(arr.dtype, np.floating):
        return np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.round(np.nan_to_num(a)).astype(np.uint8)
    batched = a.ndim > spatial_dims + (a.shape[-1] in (1, 3))
    return np.stack([to_uint8(im) for im in a]) if batched else to_uint8(a)


def _onnx_session(run: Path, model: nn.Module, meta: dict[str, Any], onnx_file: str | Path | None) -> Any:
    """An ONNX Runtime session of the run's exported graph (exported now when ``RUN/model.onnx`` is missing).

    Raises:
        DataError: The file is missing, or it takes clinical fields and the checkpoint does not, or the reverse.
    """
    from medclass.deploy.export import export_onnx, onnx_session

    path = Path(onnx_file) if onnx_file else run / "model.onnx"
    if not path.is_file():
        if onnx_file:
            raise DataError(f"{path}: ONNX file not found (make one with medclass export)")
        shape = (8, *meta["preprocessing"]["input_shape"])
        images = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
        export_onnx(model, meta, path, check_images=images)
    session = onnx_session(path)
    if ("tabular" in {i.name for i in session.get_inputs()}) != bool(meta["preprocessing"].get("tabular")):
        raise DataError(f"{path}: its clinical-field input does not match the checkpoint's; export it again")
    return session


def _read_input(path: Path, decode: dict[str, Any]) -> Iterator[tuple[np.ndarray, str]]:
    """Yield ``(array, source name)`` for one CLI input: each image of a folder, or one array.

    ``decode`` holds the checkpoint's file options (DICOM ``window``, ``frame``), so files are read
    the way the training files were.
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise DataError(f"{path}: no image files found")
        for f in files:
            yield read_image(f, **decode), str(f)
        return
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            reason = "not a NumPy array file" if "pickle" in str(err) else str(err).splitlines()[0]
            raise DataError(f"{path}: not a readable .npy array ({reason})") from None
        yield arr, str(path)
        return
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = [k for k in ("test_images", "images") if k in npz.files] or [
                    k for k in npz.files if k.endswith("images")
                ]
                if not keys:
                    raise DataError(f"{path}: no 'images' or 'test_images' array (found: {', '.join(npz.files)})")
                arr = npz[keys[0]]
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a readable .npz file ({err})") from None
        yield arr, f"{path}:{keys[0]}"
        return
    yield read_image(path, **decode), str(path)
