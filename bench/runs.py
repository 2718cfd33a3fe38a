"""Helpers shared by the benchmarks that train runs: one training through the CLI, and mean ± sd."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medclass.cli import main as cli_main  # noqa: E402


def train_and_read(args: list[str], out: Path, *, reuse: bool = True) -> dict:
    """Run ``medclass train ARGS --out OUT --quiet``; its test AUC/ACC, training minutes, parameters and ECE.

    Parameters of a classical model are the values it stores (vocabulary, support vectors).

    With ``reuse``, a finished run already in ``OUT`` (it has ``metrics.json``) is read, not repeated.
    """
    if not (reuse and (out / "metrics.json").is_file()):
        code = cli_main(["train", *args, "--out", str(out), "--quiet"])
        if code != 0:
            raise SystemExit(f"medclass train {' '.join(args)} failed with exit code {code}")
    test = json.loads((out / "metrics.json").read_text())["splits"]["test"]
    hist = (out / "history.csv").read_text().splitlines()
    col = hist[0].split(",").index("seconds")
    minutes = sum(float(r.split(",")[col]) for r in hist[1:]) / 60
    from medclass.models import member_architectures
    from medclass.predict import Predictor

    predictor = Predictor.from_checkpoint(out)
    model = predictor.model
    # classical models learn no parameters: count what they store (vocabulary, support vectors) instead
    params = sum(p.numel() for p in model.parameters()) or sum(b.numel() for b in model.buffers())
    row = {"auc": test["auc"], "acc": test["acc"], "minutes": minutes, "params": params}
    row["models"] = [a["name"] for a in member_architectures(predictor.meta)]
    if "calibration" in test:
        row["ece"] = test["calibration"]["ece"]
    return row


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` (one value: the value; none: ``-``)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
