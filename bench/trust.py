"""Trust benchmark: calibration, conformal coverage and referral of trained runs, on their test splits.

For each run folder it loads the model and the run's data, fits what ``medclass train`` fits on
validation after training (temperature scaling, the operating threshold, conformal thresholds,
the referral cut; see :func:`medclass.evaluate.fit_post_training`) and reports the test figures:
ECE (15 equal-width bins and adaptive) and Brier score before and after temperature scaling,
empirical coverage and mean size of the 90% and 95% prediction sets, and for binary tasks the
share of cases accepted with the sensitivity on them. Run folders are read, never changed.

Conformal coverage is also measured over random re-splits: validation and test images are pooled
and split again (same sizes) many times, thresholds fitted on one part and coverage read on the
other. Its mean is what the method guarantees when calibration and test images are exchangeable,
and its sd is the spread one fixed split shows by chance; a fixed-split coverage far outside it
points at a shift between the validation and test images, not at the method.

Rows recorded in ``bench/results/trust.json`` for other datasets or recipes are kept; the runs given
replace the recorded ones of their own dataset and recipe.

Usage:
    python bench/trust.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from benchmd import update_section  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "trust.json"


def calibration_floor(labels: Any, probs: Any, task: str, draws: int = 200) -> dict[str, float]:
    """Mean ECE and debiased l2 error of a perfectly calibrated model on a test set of this size.

    Labels are drawn from ``probs`` themselves. ECE is biased upwards on small sets (each bin's
    observed frequency is noisy); these are the values that even perfect calibration would show here.
    """
    import numpy as np

    from medclass.metrics.calibration import debiased_l2_calibration_error, expected_calibration_error

    rng = np.random.default_rng(0)
    p = np.asarray(probs)
    known = ~np.isnan(np.asarray(labels, dtype=float).reshape(len(p), -1)).all(1)
    p = p[known]
    ece, l2 = [], []
    for _ in range(draws):
        if task == "binary":
            y = (rng.uniform(size=len(p)) < p[:, 1]).astype(float)
        else:
            y = np.array([rng.choice(p.shape[1], p=row / row.sum()) for row in p], dtype=float)
        ece.append(expected_calibration_error(y, p, task=task))
        l2.append(debiased_l2_calibration_error(y, p, task=task))
    return {"ece_floor": float(np.mean(ece)), "ce_l2_floor": float(np.mean(l2))}


def resplit_coverage(
    labels: tuple[Any, Any], probs: tuple[Any, Any], alpha: float, draws: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Mean and sd of APS coverage at ``1 - alpha`` over ``draws`` random re-splits of pooled (val, test)."""
    import numpy as np

    from medclass.trust.conformal import fit_conformal, prediction_sets, set_metrics

    y = np.concatenate([np.asarray(labels[0], dtype=float).reshape(-1), np.asarray(labels[1], dtype=float).reshape(-1)])
    p = np.concatenate([probs[0], probs[1]])
    n_cal, rng = len(probs[0]), np.random.default_rng(seed)
    covs = []
    for _ in range(draws):
        order = rng.permutation(len(y))
        cal, rest = order[:n_cal], order[n_cal:]
        fit = fit_conformal(p[cal], y[cal], alphas=(alpha,), seed=int(rng.integers(2**31)))
        t = fit["thresholds"][0]
        sets = prediction_sets(p[rest], np.inf if t is None else t, rng=rng)  # fresh randomisation each draw
        covs.append(set_metrics(sets, y[rest])["coverage"])
    return float(np.mean(covs)), float(np.std(covs, ddof=1))


def measure(run: Path) -> dict:
    """The test figures of one run (see the module docstring)."""
    from medclass.checkpoint import load_model
    from medclass.config import config_from_dict, read_yaml
    from medclass.data.sources import load_configured
    from medclass.evaluate import fit_post_training

    cfg = config_from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml"))
    dataset = load_configured(cfg.data)
    model, meta = load_model(run)
    cfg.eval.n_bootstrap = 0
    metrics, _, probs = fit_post_training(model, meta, dataset, cfg.eval, seed=cfg.train.seed)
    test = metrics["splits"]["test"]
    cal = test["calibration"]
    row = {
        "dataset": f"{dataset.name} ({cfg.recipe or 'no'} recipe)",
        "temperature": cal.get("temperature"),
        "ece_before": cal["uncalibrated"]["ece"],
        "ece": cal["ece"],
        "ce_l2_before": cal["uncalibrated"]["ce_l2_debiased"],
        "ce_l2": cal["ce_l2_debiased"],
        "ece_adaptive_before": cal["uncalibrated"]["ece_adaptive"],
        "ece_adaptive": cal["ece_adaptive"],
        "brier_before": cal["uncalibrated"]["brier"],
        "brier": cal["brier"],
        "cov90": test["conformal"]["0.1"]["coverage"],
        "size90": test["conformal"]["0.1"]["mean_size"],
        "cov95": test["conformal"]["0.05"]["coverage"],
        "size95": test["conformal"]["0.05"]["mean_size"],
        "aurc": test["aurc"],
    }
    row.update(calibration_floor(dataset.splits["test"].labels, probs["test"], meta["task"]))
    pair = (dataset.splits["val"].labels, dataset.splits["test"].labels), (probs["val"], probs["test"])
    for alpha, key in ((0.1, "cov90"), (0.05, "cov95")):
        row[f"{key}_resplit"], row[f"{key}_resplit_sd"] = resplit_coverage(*pair, alpha)
    if "referral" in test:
        row.update(accepted=test["referral"]["coverage"], sens_accepted=test["referral"]["sensitivity"])
    return row


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(rows: dict[str, dict], command: str) -> str:
    by_dataset: dict[str, list[dict]] = {}
    for r in rows.values():
        by_dataset.setdefault(r["dataset"], []).append(r)
    lines = [
        f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} cores). Test split, mean ± sd over the runs "
        "given; ECE with 15 bins; debiased l2 error: Kumar et al. 2019, 15 equal-count bins (an upper bound on the "
        "l1 calibration error that ECE estimates, without ECE's small-sample bias); prediction sets are APS, "
        "calibrated on validation; re-splits: validation and test pooled and split again 500 times at the same "
        "sizes (the coverage the method gives on exchangeable images, and in brackets the sd one fixed split "
        "shows by chance); referral keeps sensitivity "
        ">= 0.95 on accepted validation cases.",
        "",
        "| dataset | runs | T | ECE before → after | ECE of perfect calibration, same n | debiased l2 error before → "
        "after | same, perfect calibration | adaptive ECE before → after "
        "| Brier before → after | 90% sets: coverage / size | 95% sets: coverage / size "
        "| 90% / 95% coverage over re-splits (sd of one split) | AURC | accepted | sensitivity on accepted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in by_dataset.items():

        def col(key: str, digits: int = 3, _rs: list[dict] = rs) -> str:
            return _ms([r.get(key) for r in _rs], digits)

        def sd(key: str, _rs: list[dict] = rs) -> str:
            values = [r[key] for r in _rs if r.get(key) is not None]
            return f"{statistics.mean(values):.3f}" if values else "-"

        lines.append(
            f"| {name} | {len(rs)} | {col('temperature', 2)} | {col('ece_before')} → {col('ece')} | "
            f"{col('ece_floor')} | {col('ce_l2_before')} → {col('ce_l2')} | {col('ce_l2_floor')} | "
            f"{col('ece_adaptive_before')} → {col('ece_adaptive')} | {col('brier_before')} → {col('brier')} | "
            f"{col('cov90')} / {col('size90', 2)} | {col('cov95')} / {col('size95', 2)} | "
            f"{col('cov90_resplit')} ({sd('cov90_resplit_sd')}) / {col('cov95_resplit')} ({sd('cov95_resplit_sd')}) | "
            f"{col('aurc')} | "
            f"{col('accepted')} | {col('sens_accepted')} |"
        )
    return "\n".join(lines + [""])


def merge_recorded(rows: dict[str, dict]) -> dict[str, dict]:
    """Recorded rows of the table groups (dataset and recipe) not measured now, then the rows measured now.

    Runs measured now replace every recorded run of their group, so a group never mixes two versions of a
    recipe; the other groups keep their recorded figures, and the command lists every run in the table.
    """
    recorded = json.loads(RESULTS.read_text()).get("runs", {}) if RESULTS.exists() else {}
    measured = {r["dataset"] for r in rows.values()}
    kept = {run: r for run, r in recorded.items() if r["dataset"] not in measured}
    return kept | rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    rows = {}
    for run in args.runs:
        rows[str(run)] = measure(run)
        print(run, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[str(run)].items()}))
    rows = merge_recorded(rows)
    command = "python bench/trust.py " + " ".join(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command, "runs": rows}, indent=2))
    update_section("trust", "Trust: calibration, conformal prediction sets and referral", render(rows, command))


if __name__ == "__main__":
    main()
