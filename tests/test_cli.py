"""The ``medclass`` command line: listing, train -> evaluate -> predict on a synthetic file, and user errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medclass.checkpoint import load_model
from medclass.data.catalog import CATALOG

RUN_FILES = ("config.yaml", "model.safetensors", "model.json", "history.csv", "metrics.json", "report.html")


def _table_rows(out: str) -> list[str]:
    """Body rows of a table printed by the CLI (after the dashed line, up to the first blank line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def _read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# --------------------------------------------------------------------------------------- listings


def test_datasets_lists_the_whole_catalog(run_cli):
    res = run_cli("datasets")
    assert res.code == 0
    rows = _table_rows(res.out)
    assert len(rows) == 18 == len(CATALOG)
    assert [r.split()[0] for r in rows] == list(CATALOG)
    assert "pneumoniamnist" in res.out and "adrenalmnist3d" in res.out


def test_models_filters_by_pattern(run_cli):
    res = run_cli("models", "resnet*")
    assert res.code == 0
    names = [r.split()[0] for r in _table_rows(res.out)]
    assert names and all(n.startswith("resnet") for n in names)
    assert "resnet18_28" in names and "smallcnn" not in names
    everything = [r.split()[0] for r in _table_rows(run_cli("models").out)]
    assert set(names) < set(everything) and "smallcnn" in everything


def test_python_m_medclass_help():
    proc = subprocess.run([sys.executable, "-m", "medclass", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("datasets", "models", "train", "evaluate", "predict"):
        assert command in proc.stdout


# ------------------------------------------------------------------------ train, evaluate, predict


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, make_npz, fast_config, cli_main) -> tuple[Path, Path]:
    """``(run folder, data file)`` of one fast training run on a synthetic binary npz."""
    root = tmp_path_factory.mktemp("binary")
    data = make_npz(root / "synthetic.npz", task="binary")
    run = root / "run"
    code = cli_main(["train", "--data", data, "--config", fast_config, "--out", run, "--quiet"])
    assert code == 0
    return run, data


def test_train_writes_run_files(binary_run):
    run, data = binary_run
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["spec"] == str(data) and cfg["train"]["epochs"] == 2 and cfg["recipe"] == "auto:default"
    assert "<html" in (run / "report.html").read_text().lower()
    model, meta = load_model(run)
    assert not model.training


def test_train_model_json(binary_run):
    meta = json.loads((binary_run[0] / "model.json").read_text())
    for key in ("architecture", "preprocessing", "task", "label_names", "threshold"):
        assert key in meta
    assert meta["task"] == "binary"
    assert meta["label_names"] == ["0", "1"]
    assert meta["architecture"]["name"] == "smallcnn" and meta["architecture"]["in_chans"] == 1
    assert meta["preprocessing"]["input_shape"] == [1, 12, 12]
    assert isinstance(meta["threshold"], float) and 0 <= meta["threshold"] <= 1


def test_train_metrics_json(binary_run):
    metrics = json.loads((binary_run[0] / "metrics.json").read_text())
    assert {"dataset", "task", "label_names", "splits"} <= set(metrics)
    assert metrics["dataset"] == "synthetic" and metrics["task"] == "binary"
    assert set(metrics["splits"]) == {"val", "test"}
    for split in metrics["splits"].values():
        assert list(split)[:2] == ["auc", "acc"]
        assert split["n"] == 24
    assert metrics["splits"]["test"]["auc"] > 0.8  # the synthetic labels are learnable in two epochs


def test_train_history_csv(binary_run):
    rows = _read_csv((binary_run[0] / "history.csv").read_text())
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_auc", "val_acc", "lr"} <= set(rows[0])
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)


def test_evaluate(binary_run, run_cli, tmp_path):
    run, data = binary_run
    out = tmp_path / "eval"
    res = run_cli(
        "evaluate", "--checkpoint", run, "--data", data, "--split", "val", "test", "--n-bootstrap", "20", "--out", out
    )
    assert res.code == 0, res.err
    assert (out / "report.html").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"val", "test"}
    trained = json.loads((run / "metrics.json").read_text())
    for key in ("auc", "acc", "n"):  # same model, same data, same stored threshold
        assert metrics["splits"]["test"][key] == trained["splits"]["test"][key]
    assert metrics["splits"]["test"]["operating_point"] == trained["splits"]["test"]["operating_point"]


def test_evaluate_default_output_folder(binary_run, run_cli, tmp_path):
    run = Path(shutil.copytree(binary_run[0], tmp_path / "run"))
    res = run_cli("evaluate", "--checkpoint", run, "--data", binary_run[1], "--n-bootstrap", "5")
    assert res.code == 0, res.err
    metrics = json.loads((run / "eval-synthetic" / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["test"]


def _check_predictions(text: str, n: int) -> list[dict[str, str]]:
    rows = _read_csv(text)
    assert len(rows) == n
    assert list(rows[0]) == ["source", "prob_0", "prob_1", "label", "set", "refer"]
    for r in rows:
        p0, p1 = float(r["prob_0"]), float(r["prob_1"])
        assert 0 <= p1 <= 1 and abs(p0 + p1 - 1) < 1e-5
        assert r["label"] in ("0", "1")
        assert set(filter(None, r["set"].split(";"))) <= {"0", "1"} and r["refer"] in ("0", "1")
    return rows


def test_predict_npz(binary_run, run_cli):
    run, data = binary_run
    res = run_cli("predict", "--checkpoint", run, data)
    assert res.code == 0, res.err
    rows = _check_predictions(res.out, 24)
    assert rows[0]["source"].endswith("test_images[0]")
    labels = np.load(data)["test_labels"][:, 0]
    predicted = np.array([int(r["label"]) for r in rows])
    assert (predicted == labels).mean() > 0.7


def test_predict_npy_to_csv_file(binary_run, run_cli, tmp_path):
    run, data = binary_run
    images = np.load(data)["test_images"][:10]  # (10, 12, 12), like the training images
    npy = tmp_path / "images.npy"
    np.save(npy, images)
    out = tmp_path / "pred.csv"
    res = run_cli("predict", "--checkpoint", run, npy, "--out", out)
    assert res.code == 0, res.err
    rows = _check_predictions(out.read_text(), 10)
    assert [r["source"] for r in rows] == [f"{npy}[{i}]" for i in range(10)]
    # the same images through the .npz give the same probabilities
    via_npz = _read_csv(run_cli("predict", "--checkpoint", run, data).out)[:10]
    assert [r["prob_1"] for r in rows] == [r["prob_1"] for r in via_npz]


@pytest.mark.filterwarnings("error")  # e.g. torch's warning about read-only arrays from PIL
def test_predict_png_folder(binary_run, run_cli, tmp_path):
    run, data = binary_run
    images = np.load(data)["test_images"][:5]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"img{i}.png")
    res = run_cli("predict", "--checkpoint", run, folder)
    assert res.code == 0, res.err
    rows = _check_predictions(res.out, 5)
    assert [Path(r["source"]).name for r in rows] == [f"img{i}.png" for i in range(5)]


# ------------------------------------------------------------------------------------ user errors


def _bad_case(name: str, tmp_path: Path, make_npz: Callable[..., Path], fast_config: Path) -> tuple[list, list[str]]:
    """Arguments of a failing command and substrings its one-line error must contain."""
    train = ["train", "--config", fast_config, "--quiet", "--out", tmp_path / "run"]
    good = make_npz(tmp_path / "good.npz", sizes=(20, 8, 8), size=8)
    arrays = dict(np.load(good))
    if name == "missing file":
        return [*train, "--data", tmp_path / "missing.npz"], ["missing.npz", "not found"]
    if name == "corrupt npz":
        bad = tmp_path / "corrupt.npz"
        bad.write_bytes(np.random.default_rng(0).bytes(2000))
        return [*train, "--data", bad], ["corrupt.npz"]
    if name == "wrong keys":
        bad = tmp_path / "keys.npz"
        np.savez(bad, images=arrays["train_images"], labels=arrays["train_labels"])
        return [*train, "--data", bad], ["keys.npz", "train_images"]
    if name == "count mismatch":
        bad = tmp_path / "mismatch.npz"
        np.savez(bad, **{**arrays, "train_labels": arrays["train_labels"][:-1]})
        return [*train, "--data", bad], ["mismatch.npz", "20 images", "19 labels"]
    if name == "empty split":
        bad = tmp_path / "emptyval.npz"
        np.savez(bad, **{**arrays, "val_images": arrays["val_images"][:0], "val_labels": arrays["val_labels"][:0]})
        return [*train, "--data", bad], ["emptyval.npz", "val", "empty"]
    if name == "unknown model":
        return [*train, "--data", good, "--model", "nosuchnet"], ["nosuchnet", "unknown model"]
    if name == "unknown dataset":
        return [*train, "--data", "nosuchmnist"], ["nosuchmnist", "unknown dataset"]
    if name == "unknown recipe":
        return [*train, "--data", good, "--recipe", "nosuchrecipe"], ["nosuchrecipe", "unknown recipe"]
    if name in ("bad config key", "bad config value", "invalid yaml"):
        file, text, problem = {
            "bad config key": ("typo.yaml", "train:\n  epochz: 3\n", "epochz"),
            "bad config value": ("value.yaml", "train:\n  epochs: many\n", "epochs"),
            "invalid yaml": ("broken.yaml", "train: [epochs\n", "invalid YAML"),
        }[name]
        (tmp_path / file).write_text(text)
        return ["train", "--data", good, "--config", tmp_path / file, "--quiet", "--out", tmp_path / "run"], [
            file,
            problem,
        ]
    if name == "nothing to resume":
        (tmp_path / "empty").mkdir()
        return ["train", "--resume", "--out", tmp_path / "empty", "--quiet"], ["empty", "nothing to resume"]
    if name == "missing checkpoint":
        return ["predict", "--checkpoint", tmp_path / "norun", good], ["norun"]
    raise AssertionError(name)


BAD_CASES = [
    "missing file",
    "corrupt npz",
    "wrong keys",
    "count mismatch",
    "empty split",
    "unknown model",
    "unknown dataset",
    "unknown recipe",
    "bad config key",
    "bad config value",
    "invalid yaml",
    "nothing to resume",
    "missing checkpoint",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_user_errors_exit_2_with_one_line(case, run_cli, tmp_path, make_npz, fast_config):
    args, expected = _bad_case(case, tmp_path, make_npz, fast_config)
    res = run_cli(*args)
    assert res.code == 2, (res.out, res.err)
    assert "Traceback" not in res.err + res.out
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("medclass: error: ")
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("case", ["evaluate missing data", "predict missing input", "predict corrupt npy"])
def test_run_user_errors_exit_2_with_one_line(case, binary_run, run_cli, tmp_path):
    run, data = binary_run
    if case == "evaluate missing data":
        args, expected = ["evaluate", "--checkpoint", run, "--data", tmp_path / "gone.npz"], ["gone.npz", "not found"]
    elif case == "predict missing input":
        args, expected = ["predict", "--checkpoint", run, tmp_path / "gone.png"], ["gone.png", "not found"]
    else:
        bad = tmp_path / "bad.npy"
        bad.write_bytes(b"not an array at all")
        args, expected = ["predict", "--checkpoint", run, bad], ["bad.npy"]
    res = run_cli(*args)
    assert res.code == 2, (res.out, res.err)
    assert "Traceback" not in res.err + res.out
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medclass: error: "), res.err
    for text in expected:
        assert text in lines[0], lines[0]


# ------------------------------------------------------------------------------ the command line itself


def _subcommands():
    from medclass.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices


def test_version_and_bare_command_print_help(run_cli):
    from medclass import __version__

    res = run_cli("--version")
    assert res.code == 0 and res.out.strip() == f"medclass {__version__}"
    res = run_cli()
    assert res.code == 0 and res.out.startswith("usage: medclass") and "train" in res.out and not res.err


def test_every_option_has_help_and_every_command_takes_verbosity():
    import argparse

    _, commands = _subcommands()
    assert {"datasets", "models", "recipes", "train", "evaluate", "predict", "export", "serve"} <= set(commands)
    for name, parser in commands.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"-v", "-q", "--verbose", "--quiet"} <= flags, name
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"medclass {name}: {action.option_strings or action.dest} has no help text"
    help_text = commands["serve"].format_help()
    assert "(default: 8000)" in help_text and "(default: 127.0.0.1)" in help_text


def test_cli_saliency_methods_match_the_library():
    from medclass.cli.explain import METHODS as CLI_METHODS
    from medclass.explain.methods import METHODS

    assert CLI_METHODS == METHODS


def test_set_and_enum_errors_exit_2_with_one_line(run_cli, tmp_path, make_npz, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(20, 8, 8), size=8)
    base = ["train", "--data", data, "--config", fast_config, "-q", "--out", tmp_path / "run"]
    for extra, expected in [
        (["--set", "train.select_metric=aucc"], ["select_metric", "aucc", "auc, acc"]),
        (["--set", "train.precision=fp64"], ["precision", "fp64"]),
        (["--set", "train.epochs"], ["train.epochs", "="]),
        (["--set", "train.nosuchkey=1"], ["nosuchkey"]),
    ]:
        res = run_cli(*base, *extra)
        assert res.code == 2, (extra, res.out, res.err)
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medclass: error: "), res.err
        for text in expected:
            assert text in lines[0], (text, lines[0])


def test_set_reaches_the_run_and_explicit_epochs_win(run_cli, tmp_path, make_npz, fast_config):
    data = make_npz(tmp_path / "d.npz", sizes=(20, 8, 8), size=8)
    run = tmp_path / "run"
    budget = tmp_path / "budget.yaml"
    budget.write_text("train:\n  max_minutes: 5\n")
    res = run_cli(
        "train", "--data", data, "--recipe", "default", "--config", budget, "--epochs", "1", "-q", "--out", run,
        "--set", "train.ema=0", "--set", "augment.rotate=3", "--set", "eval.n_bootstrap=10",
        "--set", "train.max_minutes=null",
    )  # fmt: skip
    assert res.code == 0, res.err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["ema"] == 0 and cfg["augment"]["rotate"] == 3 and cfg["train"]["epochs"] == 1
    assert cfg["train"]["max_minutes"] is None, "null given on purpose replaces the config file's value"
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 1, "one epoch, as asked"


def test_evaluate_reads_a_manifest_with_the_runs_label_column(run_cli, tmp_path, fast_config):
    """A run trained on a manifest's ``subtype`` column is evaluated on that column, not on ``label``."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(60):
        sub = ("normal", "bacteria", "virus")[i % 3]
        pixels = rng.integers(0, 60, (12, 12)).astype(np.uint8)
        pixels[4 * (i % 3) : 4 * (i % 3) + 4] += 150
        Image.fromarray(pixels).save(tmp_path / "img" / f"{i:03d}.png")
        rows.append(f"img/{i:03d}.png,{'NORMAL' if sub == 'normal' else 'PNEUMONIA'},{sub}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,subtype\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    res = run_cli("train", "--data", manifest, "--label-column", "subtype", "--config", fast_config, "-q", "--out", run)
    assert res.code == 0, res.err
    res = run_cli("evaluate", "--checkpoint", run, "--data", manifest, "--n-bootstrap", "10", "--out", tmp_path / "ev")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["task"] == "multiclass" and metrics["label_names"] == ["bacteria", "normal", "virus"]
    support = [c["support"] for c in metrics["splits"]["test"]["per_class"]]
    assert min(support) > 0 and sum(support) == metrics["splits"]["test"]["n"], "labels from subtype, all 3 classes"
