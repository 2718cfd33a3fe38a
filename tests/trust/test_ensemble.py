"""Deep ensembles and MC dropout: averaged calibrated probabilities, seeded dropout, the CLI options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medclass.errors import ModelError
from medclass.models import create_model
from medclass.predict import Predictor
from medclass.tasks import logits_to_probs
from medclass.trust.ensemble import ProbabilityAverage, probs_to_logits


@pytest.mark.parametrize(("task", "outputs"), [("binary", 1), ("multiclass", 4), ("multilabel", 3)])
def test_probs_to_logits_inverts_logits_to_probs(task, outputs):
    z = torch.randn(6, outputs)
    p = logits_to_probs(z, task)
    assert torch.allclose(logits_to_probs(probs_to_logits(p, task), task), p, atol=1e-5)


def test_average_of_calibrated_members():
    torch.manual_seed(0)
    a, b = (create_model("smallcnn", in_chans=1, num_classes=3).eval() for _ in range(2))
    cal = {"method": "temperature", "temperature": 2.0}
    x = torch.randn(4, 1, 12, 12)
    ens = ProbabilityAverage([a, b], [None, cal], "multiclass").eval()
    with torch.no_grad():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x) / 2, 1)) / 2
        assert torch.allclose(torch.softmax(ens(x), 1), expected, atol=1e-5)


def test_mc_dropout_is_seeded_and_averages_stochastic_passes():
    torch.manual_seed(0)
    model = create_model("smallcnn", in_chans=1, num_classes=2, drop_rate=0.5).eval()
    x = torch.randn(5, 1, 12, 12)
    mc = ProbabilityAverage([model], [None], "multiclass", mc_samples=8, seed=3).eval()
    with torch.no_grad():
        first, second = mc(x), mc(x)
        plain = model(x)
    assert torch.equal(first, second)  # same seed, same masks
    assert not torch.allclose(torch.softmax(first, 1), torch.softmax(plain, 1), atol=1e-4)
    assert not model.training and all(not m.training for m in model.modules())  # dropout back off
    with pytest.raises(ModelError, match="MC dropout needs models with dropout"):
        ProbabilityAverage([create_model("smallcnn")], [None], "binary", mc_samples=4)


def test_cli_ensemble_evaluate_and_predict(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "a.npz", sizes=(40, 12, 24), size=12)
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"r{seed}"
        res = run_cli("train", "--data", data, "--config", fast_config, "--out", run, "--quiet", "--seed", str(seed))
        assert res.code == 0, res.err
        runs.append(run)
    res = run_cli("evaluate", "--checkpoint", runs[0], "--ensemble", runs[1], "--data", data, "--out", tmp_path / "ev")
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "conformal" in metrics["splits"]["test"] and metrics["threshold"] is not None
    ens = Predictor.from_checkpoint(runs[0], ensemble=[runs[1]])
    images = np.load(data)["test_images"][:6]
    members = [Predictor.from_checkpoint(r).predict_array(images)[0] for r in runs]
    np.testing.assert_allclose(ens.predict_array(images)[0], (members[0] + members[1]) / 2, atol=1e-4)
    res = run_cli("predict", "--checkpoint", runs[0], data, "--ensemble", runs[1])
    assert res.code == 0 and res.out.splitlines()[0] == "source,prob_0,prob_1,label"
    bad = run_cli("predict", "--checkpoint", runs[0], "--mc-dropout", "4", data)
    assert bad.code == 2 and "MC dropout needs models with dropout" in bad.err
