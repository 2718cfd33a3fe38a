"""``bench/label_efficiency.py``'s arguments and ``bench/label_efficiency_report.py``'s tables and targets, from a
hand-made results dict (no training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(import_bench: Callable[[str], ModuleType]) -> ModuleType:
    return import_bench("label_efficiency")


@pytest.fixture(scope="module")
def report(import_bench: Callable[[str], ModuleType]) -> ModuleType:
    return import_bench("label_efficiency_report")


def _row(val: float, test: float, acc: float, labels: int, **extra: float) -> dict:
    return {"val_auc": val, "test_auc": test, "test_acc": acc, "labels": labels, "train_minutes": 1.5, **extra}


MACHINE = {"cpu": "Test CPU", "platform": "Linux-test", "cores": 2, "threads": 1}


def _saved() -> dict:
    """Pneumonia: at 10% supervised has the better *test* AUC, finetune the better *validation* AUC."""
    pre = {"pretrain_minutes": 4.0, "pretrain_method": "simclr", "pretrain_epochs": 30}
    return {
        "pneumoniamnist": {
            "command": "python bench/label_efficiency.py --datasets pneumoniamnist --seeds 0 1",
            "machine": MACHINE,
            "pretrain": {"0": {"method": "simclr", "epochs": 30, "minutes": 4.0}},
            "runs": {
                "supervised": {
                    "0.1": {"0": _row(0.90, 0.975, 0.90, 471), "1": _row(0.92, 0.971, 0.89, 471)},
                    "0.01": {"0": _row(0.80, 0.930, 0.80, 47)},
                },
                "finetune": {
                    "0.1": {"0": _row(0.95, 0.955, 0.87, 471, **pre), "1": _row(0.96, 0.957, 0.88, 471, **pre)}
                },
                "semi": {"0.01": {"0": {"error": "boom"}}},
                "probe": {"1": {"0": _row(0.97, 0.980, 0.90, 4708, **pre)}},
            },
        },
        "breastmnist": {
            "command": "python bench/label_efficiency.py --datasets breastmnist",
            "machine": MACHINE,
            "runs": {
                "supervised": {"0.1": {"0": _row(0.80, 0.800, 0.78, 55)}},
                "semi": {"0.1": {"0": _row(0.85, 0.850, 0.80, 55)}, "0.25": {"0": _row(0.70, 0.90, 0.85, 136)}},
            },
        },
    }


def test_best_method_is_chosen_on_validation_not_test(report: ModuleType) -> None:
    method, summary = report.best_method(_saved()["pneumoniamnist"], "0.1")
    assert method == "finetune"
    assert summary["test_auc"] == pytest.approx(0.956)
    text = report.render(_saved())
    line = next(x for x in text.splitlines() if x.startswith("- PneumoniaMNIST, 10% of labels"))
    assert "`finetune` AUC 0.956" in line and line.endswith("**not met**")  # supervised's 0.973 test would meet it
    assert "| **finetune** | 10% (471) | 0.956 ± 0.001 |" in text
    assert "| supervised | 10% (471) | 0.973 ± 0.003 |" in text


def test_best_method_compares_methods_on_their_shared_seeds(report: ModuleType) -> None:
    """One lucky seed of ``semi`` must not beat three seeds of ``finetune`` that win on the seed they share."""
    runs = {
        "finetune": {"0.1": {s: _row(v, 0.95, 0.9, 47) for s, v in (("0", 0.90), ("1", 0.80), ("2", 0.80))}},
        "semi": {"0.1": {"0": _row(0.88, 0.99, 0.9, 47)}},
    }
    method, summary = report.best_method({"runs": runs}, "0.1")
    assert method == "finetune" and summary["seeds"] == 3  # all seeds: semi's 0.88 would beat finetune's mean 0.833
    runs["semi"]["0.1"] = {"3": _row(0.88, 0.99, 0.9, 47)}  # no seed in common: every seed counts
    assert report.best_method({"runs": runs}, "0.1")[0] == "semi"


def test_missing_measurements_read_not_measured(report: ModuleType) -> None:
    lines = report.targets(_saved())
    by_start = {line.split(":")[0]: line for line in lines}
    assert len(lines) == 7
    # 1%: the only other method failed, so there is nothing to compare supervised with
    assert by_start["- PneumoniaMNIST, smallest fraction"].endswith("(1%): not measured")
    assert by_start["- PneumoniaMNIST, 1% of labels"].endswith("`supervised` AUC 0.930 (1 seed): **not met**")
    assert by_start["- BreastMNIST, linear probe with all labels, encoder from <= 30 CPU-min of pretraining"].endswith(
        "not measured"
    )
    assert by_start["- AdrenalMNIST3D, 10% of labels"].endswith("not measured")
    probe_line = by_start["- PneumoniaMNIST, linear probe with all labels, encoder from <= 30 CPU-min of pretraining"]
    assert probe_line.endswith("AUC 0.9800 (1 seed), pretraining at most 4.0 CPU-min: **met**")
    # Breast's smallest fraction is 10% (not 25%, where semi has the better test AUC); semi wins on validation
    breast = by_start["- BreastMNIST, smallest fraction"]
    assert "(10%)" in breast and "`semi` AUC 0.850 vs supervised 0.800 (+0.050)" in breast and "**met**" in breast


def test_render_lists_references_failures_machine_and_figure(report: ModuleType) -> None:
    text = report.render(_saved())
    assert "![label-efficiency curves](bench/results/label-efficiency.png)" in text
    assert "validation only" in text
    assert "Test CPU, Linux-test, 2 cores, 1 thread(s) per run" in text
    assert "| DINO ViT-B/16 linear probe (MedMNIST+) | all | 0.973 | 0.866 |" in text
    assert "| DINO ViT-B/16 linear probe (MedMNIST+) | all | 0.868 | 0.833 |" in text
    assert "ResNet-18 (28) (MedMNIST v2) | all | 0.944 | 0.854 |" in text
    assert "- failed: semi 1% seed 0: boom" in text
    assert text.index("### PneumoniaMNIST") < text.index("### BreastMNIST")
    assert all(line.count("|") == 9 for line in text.splitlines() if line.startswith("|"))


def test_fractions_and_output_rules(bench: ModuleType, report: ModuleType, tmp_path: Path) -> None:
    assert bench.labels_arg(1.0) is None and bench.labels_arg(50.0) == 50 and bench.labels_arg(0.1) == 0.1
    assert [bench.fraction_key(f) for f in (0.01, 1.0, 50.0)] == ["0.01", "1", "50"]
    assert [report.fraction_label(k) for k in ("0.01", "0.25", "1", "50")] == ["1%", "25%", "all", "50 images"]
    assert bench.parse_extra(["train.min_steps=0", "train.max_minutes=null"]) == {
        "train.min_steps": 0,
        "train.max_minutes": None,
    }
    assert report.renders_benchmarks(REPO / "bench" / "results" / "label-efficiency.json")
    assert not report.renders_benchmarks(tmp_path / "le.json")
    report.write_outputs(_saved(), tmp_path / "le.json", benchmarks=False)
    assert (tmp_path / "le.png").stat().st_size > 0
    assert "### BreastMNIST" in (tmp_path / "le.md").read_text()


def test_pretraining_epochs_name_the_methods_when_encoders_differ(report: ModuleType) -> None:
    saved = _saved()
    entry = saved["pneumoniamnist"]
    assert report.pretraining_epochs(entry) == "30"
    entry["runs"]["probe"]["1"]["0"]["pretrain_epochs"] = 20  # the probe measured on a shorter pretraining
    assert report.pretraining_epochs(entry) == "20 (probe), 30 (finetune)"
    assert "Pretraining: simclr, epochs 20 (probe), 30 (finetune)." in report.render(saved)
    for cells in entry["runs"].values():  # rows without the field: the pretraining records decide
        for row in (r for cell in cells.values() for r in cell.values()):
            row.pop("pretrain_epochs", None)
    assert report.pretraining_epochs(entry) == "30"


def test_a_probe_over_the_pretraining_budget_does_not_meet_its_target(report: ModuleType) -> None:
    saved = _saved()
    saved["pneumoniamnist"]["runs"]["probe"]["1"]["1"] = _row(0.97, 0.990, 0.90, 4708, pretrain_minutes=31.5)
    line = next(x for x in report.targets(saved) if x.startswith("- PneumoniaMNIST, linear probe"))
    assert line.endswith("AUC 0.9850 (2 seeds), pretraining at most 31.5 CPU-min: **not met**")


def test_a_run_folder_left_by_a_killed_bench_is_resumed(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import json

    import medclass

    calls: list[dict] = []

    def fake_train(data: str, out: Path, **kwargs: object) -> None:
        calls.append({"data": data, **kwargs})
        split = {"auc": 0.9, "acc": 0.8}
        (out / "metrics.json").write_text(json.dumps({"splits": {"test": split, "val": split}, "labels": {"n": 7}}))
        (out / "history.csv").write_text("epoch,seconds\n1,30\n2,30\n")

    monkeypatch.setattr(medclass, "train", fake_train)
    args = argparse.Namespace(results=str(tmp_path / "le.json"), out=str(tmp_path / "runs"), extra=[], no_render=True)
    runner = bench.Bench(args, "test")
    killed = tmp_path / "runs" / "breastmnist-supervised-f0.1-s1"
    killed.mkdir(parents=True)
    (killed / "state.json").write_text("{}")  # a checkpoint, no metrics: stopped mid-run
    row = runner.measure("breastmnist", "supervised", 0.1, 1)
    assert calls == [{"data": "breastmnist", "resume": True, "progress": False}]
    assert row["train_minutes"] == 1.0 and row["labels"] == 7 and row["test_auc"] == 0.9

    calls.clear()  # a new folder starts a run with the fraction's labels and the seed
    (tmp_path / "runs" / "breastmnist-supervised-f0.1-s2").mkdir()
    runner.measure("breastmnist", "supervised", 0.1, 2)
    assert calls == [{"data": "breastmnist", "progress": False, "labels": 0.1, "label_seed": 2, "seed": 2}]
