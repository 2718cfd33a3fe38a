"""Selective prediction: certainty relative to the operating threshold, risk-coverage, the referral cut."""

from __future__ import annotations

import numpy as np
import pytest

from medclass.predict import Predictor
from medclass.trust.selective import certainty, referral_cut, referral_summary, risk_coverage_curve


def test_binary_certainty_follows_the_operating_threshold():
    p = np.array([0.3, 0.5, 0.9])
    np.testing.assert_allclose(
        certainty(p, "binary", 0.3), [0.0, np.log(1) - np.log(0.3 / 0.7), np.log(9) - np.log(3 / 7)]
    )
    np.testing.assert_allclose(certainty(np.array([[0.2, 0.7, 0.1]]), "multiclass"), [0.7])
    with pytest.raises(ValueError, match="multilabel"):
        certainty(p, "multilabel")


def test_risk_coverage_by_hand():
    # Surest first: 0.95 (right), 0.1 (right), 0.8 (wrong), 0.45 (wrong) at threshold 0.5.
    probs = np.array([0.95, 0.8, 0.45, 0.1])
    labels = np.array([1, 0, 1, 0])
    curve = risk_coverage_curve(labels, probs, threshold=0.5)
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["risk"], [0.0, 0.0, 1 / 3, 0.5])
    assert curve["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)


def test_referral_cut_reaches_the_target_and_refers_as_few_as_possible():
    probs = np.array([0.99, 0.9, 0.6, 0.4, 0.35, 0.05, 0.02])
    labels = np.array([1, 1, 1, 1, 0, 0, 0])  # the positive at 0.4 is missed at threshold 0.5
    cut = referral_cut(labels, probs, threshold=0.5, target_sensitivity=1.0)
    # 0.6 and 0.4 are equally sure (|logit| 0.405); the next certainty up is 0.35's: everything
    # from there on is accepted (5 of 7 cases), the missed positive is referred.
    assert cut["cut"] == pytest.approx(certainty(np.array([0.35]), "binary", 0.5)[0])
    assert cut["sensitivity"] == 1.0 and cut["specificity"] == 1.0 and cut["coverage"] == pytest.approx(5 / 7)
    assert referral_summary(labels, probs, cut["cut"], threshold=0.5)["sensitivity"] == 1.0
    with pytest.warns(UserWarning, match="no cut reaches"):
        assert referral_cut([1, 1], [0.2, 0.3], threshold=0.5, target_sensitivity=0.9)["cut"] == np.inf


def test_referral_keeps_the_sensitivity_of_a_positive_class_0():
    """BreastMNIST-like: class 0 is the finding; the cut keeps its recall on accepted cases, not class 1's."""
    p_pos = np.array([0.99, 0.9, 0.6, 0.4, 0.35, 0.05, 0.02])  # P(class 0)
    probs = np.stack([p_pos, 1 - p_pos], axis=1)
    labels = np.array([0, 0, 0, 0, 1, 1, 1])  # the class-0 case at 0.4 is missed at threshold 0.5
    cut = referral_cut(labels, probs, threshold=0.5, target_sensitivity=1.0, positive_index=0)
    accepted = certainty(probs, "binary", 0.5, positive_index=0) >= cut["cut"]
    said = np.where(p_pos >= 0.5, 0, 1)
    assert np.mean(said[accepted & (labels == 0)] == 0) == 1.0 == cut["sensitivity"]  # naive recall of class 0
    assert cut["coverage"] == pytest.approx(accepted.mean()) == pytest.approx(5 / 7)
    summary = referral_summary(labels, probs, cut["cut"], threshold=0.5, positive_index=0)
    assert summary["sensitivity"] == 1.0 and summary["specificity"] == 1.0
    # Read with class 1 as positive, the same numbers are a different (wrong) operating point.
    assert referral_cut(labels, probs, threshold=0.5, target_sensitivity=1.0)["cut"] != cut["cut"]
    curve = risk_coverage_curve(labels, probs, threshold=0.5, positive_index=0)
    assert curve["risk"][-1] == pytest.approx(np.mean(said != labels))


def test_predict_flags_referrals(tmp_path, make_npz, train_cli):
    run = tmp_path / "run"
    data = make_npz(tmp_path / "a.npz", sizes=(40, 12, 12), size=12)
    train_cli(data, run)
    pred = Predictor.from_checkpoint(run)
    out = pred.predict_paths([data])
    assert out.sets is not None and out.sets.shape == out.probs.shape and out.refer.dtype == bool
    cut = pred.meta["referral"]["cut"]
    expected = certainty(out.probs, "binary", pred.threshold) < (np.inf if cut is None else cut)
    np.testing.assert_array_equal(out.refer, expected)
    wider = pred.predict_paths([data], alpha=0.01)
    assert wider.sets.sum() >= out.sets.sum()


def test_report_has_a_gallery_and_a_risk_coverage_chart(tmp_path, make_npz, train_cli):
    run = tmp_path / "run"
    train_cli(make_npz(tmp_path / "a.npz", sizes=(40, 12, 24), size=12), run)
    html = (run / "report.html").read_text()
    assert "Grad-CAM gallery" in html and "data:image/png;base64," in html
    assert "Risk" in html and "coverage" in html
