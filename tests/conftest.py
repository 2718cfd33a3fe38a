"""Shared fixtures: real test data, synthetic MedMNIST-format files, a fast config and an in-process CLI runner."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Two CPU cores are shared with other work: one thread per test process is both faster and steadier.
torch.set_num_threads(1)

FAST_CONFIG = """\
# Tiny, fast training for tests: two epochs, small batches, no bf16, few bootstrap resamples, on the
# CPU even where a GPU exists (the tests compare runs bit for bit).
train:
  epochs: 2
  batch_size: 16
  eval_batch_size: 64
  threads: 1
  precision: fp32
  device: cpu
eval:
  n_bootstrap: 20
"""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The staged real data: ``$MEDCLASS_TEST_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("MEDCLASS_TEST_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        msg = f"real test data not found at {path} (set MEDCLASS_TEST_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's cache or offline mirror unless it sets ``MEDCLASS_DATA_DIR`` itself."""
    monkeypatch.setenv("MEDCLASS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("MEDCLASS_DATA_DIR", raising=False)
    monkeypatch.delenv("MEDCLASS_RECIPES_DIR", raising=False)


# ------------------------------------------------------------------------------------ synthetic data


def _import_bench(name: str) -> ModuleType:
    """The benchmark script ``bench/<name>.py`` imported as a module (``bench/`` is not a package).

    ``bench/`` goes on ``sys.path`` as when the script runs, for its imports of the shared bench helpers.
    """
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def import_bench() -> Callable[[str], ModuleType]:
    """``import_bench("federated")``: a benchmark script of ``bench/`` as a module."""
    return _import_bench


def synth_labels(task: str, n: int, rng: np.random.Generator, *, num_classes: int, num_labels: int) -> np.ndarray:
    """Balanced class indices ``(n, 1)`` (shuffled), or random 0/1 ``(n, num_labels)`` for multilabel."""
    if task == "multilabel":
        return (rng.random((n, num_labels)) < 0.5).astype(np.float32)
    k = 2 if task == "binary" else num_classes
    y = np.arange(n) % k
    rng.shuffle(y)
    return y[:, None].astype(np.float32)


def synth_images(
    labels: np.ndarray, rng: np.random.Generator, *, task: str, size: int, channels: int, depth: int | None
) -> np.ndarray:
    """Noise plus a bright band per class (or per positive label), so a short training run learns it.

    Class/label ``j`` of ``K`` brightens band ``j`` of ``K`` along the first spatial axis, in channel
    ``j % channels``. Returns ``(N, H, W)``, ``(N, H, W, 3)``, ``(N, D, H, W)`` or ``(N, D, H, W, 3)`` uint8.
    """
    n = labels.shape[0]
    spatial = (size, size) if depth is None else (depth, size, size)
    x = rng.integers(0, 60, size=(n, channels, *spatial)).astype(np.float32)
    if task == "multilabel":
        active = np.nan_to_num(labels, nan=0.0) > 0.5
    else:
        k = int(labels.max()) + 1
        active = np.zeros((n, max(k, 2)), dtype=bool)
        active[np.arange(n), labels[:, 0].astype(int)] = True
    k = active.shape[1]
    first = spatial[0]
    for j in range(k):
        lo, hi = j * first // k, max((j + 1) * first // k, j * first // k + 1)
        x[active[:, j], j % channels, lo:hi] += 150
    x = np.clip(x, 0, 255).astype(np.uint8)
    if channels == 1:
        return x[:, 0]
    return np.moveaxis(x, 1, -1)  # channels-last, as MedMNIST stores RGB


def write_npz(
    path: str | Path,
    *,
    task: str = "binary",
    sizes: tuple[int, int, int] = (48, 24, 24),
    size: int = 12,
    channels: int = 1,
    depth: int | None = None,
    num_classes: int = 3,
    num_labels: int = 3,
    nan_fraction: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a MedMNIST-format ``.npz`` (keys ``{train,val,test}_{images,labels}``) and return its path.

    Args:
        path: File, or a folder (the file is then ``<task>.npz`` in it).
        task: ``binary``, ``multiclass`` (also for ordinal data) or ``multilabel``.
        sizes: Rows of train, val and test.
        size: Image side in pixels.
        channels: 1 (stored ``(N, H, W)``) or 3 (stored channels-last ``(N, H, W, 3)``).
        depth: Make volumes ``(N, D, H, W)`` of this depth.
        num_classes: Classes of a multiclass task.
        num_labels: Labels of a multilabel task.
        nan_fraction: Share of multilabel cells set to NaN (unknown).
        seed: Seed of the data.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path / f"{task}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        y = synth_labels(task, n, rng, num_classes=num_classes, num_labels=num_labels)
        arrays[f"{split}_images"] = synth_images(y, rng, task=task, size=size, channels=channels, depth=depth)
        if task == "multilabel":
            if nan_fraction:
                y[rng.random(y.shape) < nan_fraction] = np.nan
            arrays[f"{split}_labels"] = y
        else:
            arrays[f"{split}_labels"] = y.astype(np.uint8)  # (N, 1) uint8, like the official files
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def make_npz() -> Callable[..., Path]:
    """Factory ``make_npz(tmp_path, task=..., ...)`` writing a synthetic MedMNIST-format file (see write_npz)."""
    return write_npz


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YAML config (applied over the default recipe) that trains in well under a second."""
    from medclass.config import TrainConfig

    text = FAST_CONFIG
    if "min_steps" in {f.name for f in fields(TrainConfig)}:  # keep exactly `epochs` epochs
        text = text.replace("  epochs: 2\n", "  epochs: 2\n  min_steps: 0\n")
    path = tmp_path_factory.mktemp("config") / "fast.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ the CLI


@dataclass
class CliResult:
    """Exit status and captured output of one in-process ``medclass`` call."""

    code: int
    out: str
    err: str


def call_cli(args: list[str | Path]) -> int:
    """``medclass.cli.main(args)``, with argparse's SystemExit turned into its exit status."""
    from medclass.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(scope="session")
def cli_main() -> Callable[[list[str | Path]], int]:
    """``cli_main([...])`` -> exit status, for fixtures that cannot use capsys (output goes to pytest's capture)."""
    return call_cli


@pytest.fixture(scope="session")
def small_binary_run(
    tmp_path_factory: pytest.TempPathFactory, fast_config: Path, cli_main: Callable[[list[str | Path]], int]
) -> tuple[Path, Path]:
    """``(run folder, data file)``: one fast training on a synthetic binary npz of 16 px images, shared by tests
    that only read a finished run (serving, explanations, the browser test)."""
    root = tmp_path_factory.mktemp("small-binary")
    data = write_npz(root / "d.npz", sizes=(40, 12, 12), size=16)
    assert cli_main(["train", "--data", data, "--config", fast_config, "--out", root / "run", "--quiet"]) == 0
    return root / "run", data


def write_clinical_manifest(root: Path, n: int = 100, seed: int = 0) -> Path:
    """A CSV manifest of 8 px noise images whose label is ``age > 50``: columns ``path, label, age, sex``.

    ``age`` (numeric) is empty on about 10% of rows; ``sex`` (``f``/``m``, categorical) carries no signal.
    """
    import csv

    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "img" / f"{i:03d}.png")
        age = rng.uniform(20, 80)
        rows.append(
            [f"img/{i:03d}.png", int(age > 50), f"{age:.1f}" if rng.random() > 0.1 else "", rng.choice(["f", "m"])]
        )
    path = root / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "label", "age", "sex"], *rows])
    return path


@pytest.fixture(scope="session")
def clinical_manifest() -> Callable[..., Path]:
    """Factory ``clinical_manifest(root, n=..., seed=...)`` writing a manifest with clinical fields (see
    :func:`write_clinical_manifest`)."""
    return write_clinical_manifest


@pytest.fixture(scope="session")
def small_multimodal_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"concat": run, "film": run, "data": manifest}``: fast trainings with clinical fields ``age`` and ``sex``
    (:func:`write_clinical_manifest`), shared by tests that only read finished runs (serving, export, browser)."""
    import medclass

    root = tmp_path_factory.mktemp("small-multimodal")
    data = write_clinical_manifest(root / "data")
    options = {"epochs": 4, "batch_size": 16, "train.min_steps": 0, "train.threads": 1, "train.precision": "fp32"}
    options.update({"train.device": "cpu", "train.eval_batch_size": 64, "eval.n_bootstrap": 20})
    out: dict[str, Path] = {"data": data}
    for method in ("concat", "film"):
        run = medclass.train(
            data, recipe="default", out=root / method, progress=False, tabular=["age", "sex"], fusion=method, **options
        )
        out[method] = run.path
    return out


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run the CLI in this process: ``run_cli("train", "--data", path, ...)`` -> CliResult(code, out, err)."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = call_cli(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def train_cli(run_cli: Callable[..., CliResult], fast_config: Path) -> Callable[..., CliResult]:
    """``train_cli(data, out, *extra)``: a fast, quiet ``medclass train`` that must succeed."""

    def train(data: str | Path, out: str | Path, *extra: str | Path) -> CliResult:
        res = run_cli("train", "--data", data, "--config", fast_config, "--out", out, "--quiet", *extra)
        assert res.code == 0, res.err
        return res

    return train


# ------------------------------------------------------------------------------------------- DICOM


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    patient_id: str = "PAT-0001",
    patient_name: str = "Doe^Jane",
    modality: str = "CR",
) -> Path:
    """A small uncompressed DICOM file with patient identity, study and series set."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, "CHEST", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """``make_dicom(path, pixels, patient_id=..., patient_name=..., modality=...)``: write a small DICOM file."""
    return write_dicom
