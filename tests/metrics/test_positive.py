"""The positive class of a binary task: metrics, operating point, decisions and triage follow it, not column 1."""

from __future__ import annotations

import numpy as np
import pytest

from medclass.data.catalog import CATALOG
from medclass.errors import ConfigError
from medclass.metrics import acc, auc, choose_threshold, curves, evaluate_predictions, predict_labels
from medclass.metrics.positive import (
    binary_decision,
    binary_score,
    binary_truth,
    checkpoint_entries,
    positive_index,
    resolve_positive,
    resolve_triage,
    triage_spec,
    urgency,
)

NAMES = ["malignant", "normal, benign"]  # BreastMNIST: label 0 is the finding


def _breast_like(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Labels (a third malignant) and probabilities where the two classes' recalls differ at most thresholds."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) >= 1 / 3).astype(np.float64)  # 0 = malignant
    p_malignant = np.clip(np.where(y == 0, rng.normal(0.62, 0.2, n), rng.normal(0.25, 0.15, n)), 0.001, 0.999)
    return y, np.stack([p_malignant, 1 - p_malignant], axis=1)


def _recall(y: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Naive recall of class ``k``: the share of its cases predicted as ``k``."""
    return float(np.mean(predicted[y == k] == k))


def test_headline_sensitivity_is_the_recall_of_the_positive_class() -> None:
    y, s = _breast_like()
    t = 0.3
    report = evaluate_predictions(
        y, s, task="binary", label_names=NAMES, operating_threshold=t, n_bootstrap=0, positive_index=0
    )
    predicted = np.where(s[:, 0] >= t, 0, 1)
    sens, spec = _recall(y, predicted, 0), _recall(y, predicted, 1)
    assert abs(sens - spec) > 0.05  # the two recalls differ, so swapping them would be caught
    op = report["operating_point"]
    assert op["threshold"] == t
    assert op["sensitivity"] == pytest.approx(sens) and op["specificity"] == pytest.approx(spec)
    assert op["ppv"] == pytest.approx(np.mean(y[predicted == 0] == 0))
    assert op["acc"] == pytest.approx(np.mean(predicted == y))
    at_half = np.where(s[:, 0] > 0.5, 0, 1)
    assert report["threshold_0.5"]["sensitivity"] == pytest.approx(_recall(y, at_half, 0))
    assert report["threshold_0.5"]["specificity"] == pytest.approx(_recall(y, at_half, 1))
    # Class-ordered figures stay in class order; the symmetric ones do not move.
    cm = np.array(report["confusion_matrix"])
    assert cm.tolist() == [[int(np.sum((y == i) & (at_half == j))) for j in (0, 1)] for i in (0, 1)]
    assert report["per_class"][0]["name"] == "malignant"
    assert report["per_class"][0]["sensitivity"] == pytest.approx(_recall(y, at_half, 0))
    assert report["auc"] == auc(y, s, "binary") and report["acc"] == acc(y, s, "binary")
    old = evaluate_predictions(y, s, task="binary", label_names=NAMES, operating_threshold=t, n_bootstrap=0)
    old_predicted = np.where(s[:, 1] >= t, 1, 0)
    assert old["operating_point"]["sensitivity"] == pytest.approx(_recall(y, old_predicted, 1))  # default: index 1


def test_unknown_labels_stay_unknown_for_a_positive_class_0() -> None:
    y, s = _breast_like(seed=1, n=60)
    y[::7] = np.nan
    report = evaluate_predictions(
        y, s, task="binary", label_names=NAMES, operating_threshold=0.5, n_bootstrap=0, positive_index=0
    )
    known = ~np.isnan(y)
    predicted = np.where(s[known, 0] >= 0.5, 0, 1)
    assert report["n"] == int(known.sum())
    assert report["operating_point"]["specificity"] == pytest.approx(_recall(y[known], predicted, 1))
    np.testing.assert_array_equal(binary_truth([0, 1, np.nan], 0), [1.0, 0.0, np.nan])


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_target_sensitivity_is_reached_on_the_positive_class(target: float) -> None:
    y, s = _breast_like(seed=2)
    t = choose_threshold(y, s, task="binary", method="sensitivity", target_sensitivity=target, positive_index=0)
    assert np.mean(s[y == 0, 0] >= t) >= target  # the threshold is on P(malignant)
    higher = np.unique(s[:, 0])
    higher = higher[higher > t]
    assert higher.size == 0 or np.mean(s[y == 0, 0] >= higher[0]) < target  # and the highest that does
    report = evaluate_predictions(
        y, s, task="binary", label_names=NAMES, operating_threshold=t, n_bootstrap=0, positive_index=0
    )
    assert report["operating_point"]["sensitivity"] >= target
    youden = choose_threshold(y, s, task="binary", positive_index=0)

    def j(g: float) -> float:  # Youden's J of the malignant class at threshold g, naively
        return float(np.mean(s[y == 0, 0] >= g) + np.mean(s[y == 1, 0] < g) - 1)

    assert j(youden) == pytest.approx(max(j(g) for g in np.unique(s[:, 0])))


def test_curves_predictions_and_acc_follow_the_positive_class() -> None:
    y, s = _breast_like(seed=3)
    entry = curves(y, s, task="binary", label_names=NAMES, positive_index=0)
    assert list(entry) == ["malignant"]
    assert entry["malignant"]["auc_roc"] == pytest.approx(auc(y, s, "binary"))  # the AUC is symmetric
    np.testing.assert_array_equal(predict_labels(s, "binary", 0.3, positive_index=0), np.where(s[:, 0] >= 0.3, 0, 1))
    np.testing.assert_array_equal(predict_labels(s, "binary", 0.3), (s[:, 1] >= 0.3).astype(int))
    np.testing.assert_array_equal(binary_decision(s[:, 0], 0.3, 0), np.where(s[:, 0] >= 0.3, 0, 1))
    assert acc(y, s, "binary", 0.3, positive_index=0) == pytest.approx(np.mean(np.where(s[:, 0] > 0.3, 0, 1) == y))
    np.testing.assert_array_equal(binary_score(s, 0), s[:, 0])
    with pytest.raises(ValueError, match="positive_index"):
        binary_score(s, 2)


def test_every_binary_catalog_entry_names_its_finding() -> None:
    findings = {
        "pneumoniamnist": "pneumonia",
        "breastmnist": "malignant",
        "nodulemnist3d": "malignant",
        "adrenalmnist3d": "hyperplasia",
        "vesselmnist3d": "aneurysm",
        "synapsemnist3d": "excitatory synapse",
    }
    assert {n: i.positive_class for n, i in CATALOG.items() if i.task == "binary"} == findings
    assert all(i.positive_class is None for i in CATALOG.values() if i.task != "binary")
    assert CATALOG["breastmnist"].label_names.index("malignant") == 0


def test_the_positive_class_is_resolved_by_name() -> None:
    assert resolve_positive("binary", NAMES, None, "breastmnist") == ("malignant", 0)
    assert resolve_positive("binary", NAMES, "normal, benign", "breastmnist") == ("normal, benign", 1)  # overrides
    assert resolve_positive("binary", ["normal", "pneumonia"], None, "pneumoniamnist") == ("pneumonia", 1)
    assert resolve_positive("binary", ["benign", "malignant"], None, "my_folder") == ("malignant", 1)  # the second
    assert resolve_positive("binary", ["malignant", "normal"], "malignant", "my_folder") == ("malignant", 0)
    # A folder that happens to be called breastmnist but has other classes does not take the catalog's pick.
    assert resolve_positive("binary", ["a", "b"], None, "breastmnist") == ("b", 1)
    with pytest.raises(ConfigError) as err:
        resolve_positive("binary", NAMES, "cancer", "breastmnist")
    assert str(err.value) == "data.positive_class: no class named 'cancer'; classes: malignant, normal, benign"
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="binary"):
        resolve_positive("multiclass", ["a", "b", "c"], "b")
    assert resolve_positive("multiclass", ["a", "b", "c"]) is None


def test_checkpoint_entries_and_old_checkpoints() -> None:
    entries = checkpoint_entries("binary", NAMES, dataset_name="breastmnist")
    assert entries == {
        "positive_class": "malignant",
        "positive_index": 0,
        "triage": {"classes": ["malignant"], "indices": [0]},
    }
    assert positive_index(entries) == 0
    old = {"task": "binary", "label_names": ["0", "1"]}  # written before the positive class was stored
    assert positive_index(old) == 1 and triage_spec(old) == {"classes": ["1"], "indices": [1]}
    multi = checkpoint_entries("multiclass", ["normal", "a", "b"])
    assert multi == {"triage": {"classes": ["a", "b"], "indices": [1, 2]}}


def test_triage_ranks_by_the_positive_class_or_the_urgent_classes() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    meta = {"task": "binary", "label_names": NAMES, **checkpoint_entries("binary", NAMES, dataset_name="breastmnist")}
    np.testing.assert_allclose(urgency(probs, meta), probs[:, 0])
    assert np.argsort(-urgency(probs, meta)).tolist() == [0, 2, 1]  # most malignant first
    names = ["normal", "drusen", "edema", "neovascularization"]
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.3, 0.6, 0.05, 0.05], [0.4, 0.05, 0.25, 0.3]])
    default = {"task": "multiclass", "label_names": names, **checkpoint_entries("multiclass", names)}
    np.testing.assert_allclose(urgency(p, default), 1 - p[:, 0])  # every class but the first
    chosen = checkpoint_entries("multiclass", names, urgent_classes=["neovascularization", "edema"])
    assert chosen["triage"] == {"classes": ["edema", "neovascularization"], "indices": [2, 3]}
    ranked = urgency(p, {"task": "multiclass", "label_names": names, **chosen})
    np.testing.assert_allclose(ranked, p[:, 2] + p[:, 3])
    assert np.argsort(-ranked).tolist() == [2, 0, 1]
    assert resolve_triage("multilabel", ["x", "y"]) == {"classes": ["x", "y"], "indices": [0, 1]}
    with pytest.raises(ConfigError, match="eval.urgent_classes: no class named 'edma'; classes: normal, drusen"):
        checkpoint_entries("multiclass", names, urgent_classes=["edma"])
    with pytest.raises(ConfigError, match="positive class 'malignant'"):
        checkpoint_entries("binary", NAMES, dataset_name="breastmnist", urgent_classes=["normal, benign"])
