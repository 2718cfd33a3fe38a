"""Semi-supervised training (``train --semi``): each loss against a naive reference, the FixMatch mask, the
classwise and aligned pseudo-labels, the Mean Teacher, and end-to-end runs (labels record, mask rate, resume)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from medclass.config import RunConfig
from medclass.data.dataset import SPLITS
from medclass.tasks import logits_to_probs
from medclass.training import semi
from medclass.transforms import Compose

pytestmark = pytest.mark.filterwarnings("ignore::medclass.metrics.UndefinedMetricWarning")


def _objective(method: str = "fixmatch", *, task: str = "multiclass", k: int = 3, pool: int = 10, **options):
    cfg = RunConfig()
    cfg.semi.method = method
    cfg.semi.fairness = "none"
    for key, value in options.items():
        setattr(cfg.semi, key, value)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1 if task == "binary" else k))
    images = torch.randint(0, 255, (pool, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prep = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}
    prior = torch.full((2 if task == "binary" else k,), 1 / (2 if task == "binary" else k))
    return semi.SemiObjective(cfg, task, k, images, prep, prior, Compose([]), model, steps_per_epoch=4), model


def _batch(m: int, index: list[int] | None = None) -> semi.UnlabelledBatch:
    return semi.UnlabelledBatch(torch.tensor(index if index is not None else list(range(m))), torch.zeros(m, 1, 2, 2))


# ------------------------------------------------------------------------------------------- parts


def test_binary_logit_reads_as_two_class_softmax_like_the_task():
    z = torch.tensor([[-2.0], [0.0], [3.0]])
    two = semi.class_logits(z, "binary")
    assert torch.allclose(torch.softmax(two, 1), logits_to_probs(z, "binary"))
    ce = F.cross_entropy(two, torch.tensor([0, 1, 1]), reduction="none")
    bce = F.binary_cross_entropy_with_logits(z[:, 0], torch.tensor([0.0, 1.0, 1.0]), reduction="none")
    assert torch.allclose(ce, bce)


def test_fixmatch_loss_and_mask_match_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    weak = torch.randn(8, 3, generator=g) * 3
    strong = torch.randn(8, 3, generator=g, requires_grad=True)
    threshold = 0.8
    labels, mask = semi.pseudo_labels(torch.softmax(weak, 1), threshold)
    loss = semi.masked_cross_entropy(strong, labels, mask)
    total, kept = 0.0, 0
    for w, s in zip(weak.tolist(), strong.tolist(), strict=True):
        p = [math.exp(v) / sum(math.exp(u) for u in w) for v in w]
        if max(p) >= threshold:
            target = p.index(max(p))
            total += -(s[target] - math.log(sum(math.exp(u) for u in s)))
            kept += 1
    assert 0 < kept < 8
    assert mask.sum().item() == kept
    assert loss.item() == pytest.approx(total / 8, rel=1e-5)  # mean over the whole unlabelled batch
    loss.backward()
    assert strong.grad is not None and strong.grad[mask == 0].abs().sum() == 0


def test_the_fixmatch_mask_follows_its_threshold():
    probs = torch.tensor([0.97, 0.95, 0.9499, 0.6, 0.05, 0.02])  # P(positive) of six images, one logit each
    logits = torch.logit(probs.double()).float()[:, None]
    top = torch.softmax(semi.class_logits(logits, "binary"), 1).max(1).values
    threshold = float(top[1])  # the second image sits exactly at the threshold
    obj, _ = _objective(task="binary", threshold=threshold)
    labels, mask = obj.pseudo_label(torch.softmax(semi.class_logits(logits, "binary"), 1), torch.arange(6))
    assert mask.tolist() == [1, 1, 0, 0, 1, 1] and labels.tolist() == [1, 1, 1, 1, 0, 0]

    weak_and_strong = torch.cat([logits, torch.zeros(6, 1)])  # strong logit 0: CE log 2 for either pseudo-label
    obj.begin_epoch(10)  # past the ramp-up: the weight is semi.weight
    loss, rate = obj.loss(weak_and_strong, _batch(6))
    assert rate == pytest.approx(4 / 6)
    assert loss.item() == pytest.approx(4 * math.log(2) / 6, rel=1e-5)

    strict, _ = _objective(task="binary", threshold=1.0)
    strict.begin_epoch(10)
    loss, rate = strict.loss(weak_and_strong, _batch(6))
    assert rate == 0.0 and loss.item() == 0.0


def test_pseudolabel_trains_the_same_view_on_its_confident_predictions():
    obj, _ = _objective("pseudolabel", threshold=0.9)
    obj.begin_epoch(10)
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 4.0]], requires_grad=True)
    loss, rate = obj.loss(logits, _batch(3))
    expected = (F.cross_entropy(logits[0:1], torch.tensor([0])) + F.cross_entropy(logits[2:3], torch.tensor([2]))) / 3
    assert rate == pytest.approx(2 / 3) and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_distribution_alignment_matches_a_naive_loop_and_uses_the_running_mean():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    prior = torch.tensor([0.2, 0.3, 0.5])
    running = torch.tensor([0.5, 0.25, 0.25])
    aligned = semi.align_distribution(probs, prior, running)
    for row, out in zip(probs.tolist(), aligned.tolist(), strict=True):
        raw = [p * q / r for p, q, r in zip(row, prior.tolist(), running.tolist(), strict=True)]
        assert out == pytest.approx([v / sum(raw) for v in raw], rel=1e-6)

    obj, _ = _objective(fairness="distribution_alignment", threshold=0.0)
    obj.prior = prior
    first = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]])
    obj.pseudo_label(first, torch.tensor([0, 1]))
    labels, _ = obj.pseudo_label(probs, torch.tensor([2, 3, 4]))
    window = torch.stack([first.mean(0), probs.mean(0)]).mean(0)  # the running mean over the batches so far
    assert labels.tolist() == semi.align_distribution(probs, prior, window).argmax(1).tolist()
    assert obj.align_count == 2


def test_classwise_thresholds_match_a_naive_count():
    learned = torch.tensor([0, 0, 0, 1, -1, 2, 2, -1, -1, -1])
    got = semi.classwise_thresholds(0.9, learned, 3)
    counts = [sum(1 for v in learned.tolist() if v == c) for c in range(3)]
    unused = sum(1 for v in learned.tolist() if v < 0)
    assert got.tolist() == pytest.approx([0.9 * c / max(max(counts), unused) for c in counts])  # warm-up: 4 unused
    learned[learned < 0] = 0
    assert semi.classwise_thresholds(0.9, learned, 3).tolist() == pytest.approx([0.9, 0.9 / 7, 0.9 * 2 / 7])


def test_classwise_pseudo_labels_lower_the_threshold_of_unlearnt_classes():
    obj, _ = _objective(fairness="classwise", threshold=0.9, pool=6)
    obj.learned = torch.tensor([0, 0, 0, 0, 1, -1])  # class 0 well learnt (beta 1), class 1 a quarter, class 2 none
    probs = torch.tensor([[0.85, 0.1, 0.05], [0.1, 0.3, 0.6], [0.1, 0.25, 0.65], [0.2, 0.7, 0.1]])
    labels, mask = obj.pseudo_label(probs, torch.tensor([5, 5, 1, 2]))
    # thresholds: class 0 0.9, class 1 0.225, class 2 0.0
    assert labels.tolist() == [0, 2, 2, 1] and mask.tolist() == [0, 1, 1, 1]
    # nothing reached the fixed threshold 0.9, so no image's learnt class changed
    assert obj.learned.tolist() == [0, 0, 0, 0, 1, -1]
    obj.pseudo_label(torch.tensor([[0.05, 0.05, 0.9], [0.95, 0.03, 0.02]]), torch.tensor([5, 4]))
    assert obj.learned.tolist() == [0, 0, 0, 0, 0, 2]


def test_mean_teacher_consistency_and_teacher_update_match_a_naive_loop():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.0]])
    loss = semi.consistency_loss(s, t)
    ps, pt = torch.softmax(s, 1).tolist(), torch.softmax(t, 1).tolist()
    naive = sum((a - b) ** 2 for rs, rt in zip(ps, pt, strict=True) for a, b in zip(rs, rt, strict=True)) / 6
    assert loss.item() == pytest.approx(naive, rel=1e-6)

    obj, student = _objective("meanteacher", teacher_ema=0.9)
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    obj.after_step(student)  # step 1: decay min(0.9, 1 - 1/2) = 0.5
    obj.after_step(student)  # step 2: decay min(0.9, 1 - 1/3) = 2/3
    for k, v in obj.teacher.state_dict().items():
        target = student.state_dict()[k]
        expected = (before[k] * 0.5 + target * 0.5) * (2 / 3) + target / 3
        assert torch.allclose(v, expected, atol=1e-6)
    assert all(not p.requires_grad for p in obj.teacher.parameters())


def test_mean_teacher_loss_uses_the_teacher_on_its_own_view():
    obj, _ = _objective("meanteacher")
    obj.begin_epoch(10)
    batch = obj.draw(2, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (6, 1, 2, 2) and batch.teacher_inputs.shape == (6, 1, 2, 2)
    student_logits = torch.zeros(6, 3, requires_grad=True)
    loss, _ = obj.loss(student_logits, batch)
    with torch.no_grad():
        teacher = obj.teacher(batch.teacher_inputs)
    assert loss.item() == pytest.approx(semi.consistency_loss(student_logits, teacher).item(), rel=1e-6)


def test_state_round_trips_through_the_checkpoint_tensors():
    obj, student = _objective("meanteacher", fairness="classwise")
    obj.learned[:3] = torch.tensor([2, 1, 0])
    obj.pseudo_label(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([4]))
    obj.after_step(student)
    tensors = obj.state_tensors()
    assert any(k.startswith("semi.teacher.") for k in tensors)
    fresh, _ = _objective("meanteacher", fairness="classwise")
    fresh.load_state(tensors)
    assert fresh.steps == 1 and torch.equal(fresh.learned, obj.learned)
    assert all(torch.equal(v, fresh.teacher.state_dict()[k]) for k, v in obj.teacher.state_dict().items())


def test_weight_ramps_up_on_a_sigmoid_and_draws_are_reproducible():
    assert semi.rampup(0, 5) == pytest.approx(math.exp(-5))
    assert semi.rampup(2.5, 5) == pytest.approx(math.exp(-1.25))
    assert semi.rampup(5, 5) == 1.0 and semi.rampup(0, 0) == 1.0
    obj, _ = _objective(ratio=2, weight=2.0)
    obj.begin_epoch(1)
    assert obj.weight() == pytest.approx(2.0 * math.exp(-5 * 0.8**2))
    a = obj.draw(3, torch.Generator().manual_seed(5))
    b = obj.draw(3, torch.Generator().manual_seed(5))
    assert len(a.index) == 6 and a.inputs.shape == (12, 1, 2, 2)  # weak and strong views of 2 x 3 images
    assert torch.equal(a.index, b.index) and torch.equal(a.inputs, b.inputs)


# ------------------------------------------------------------------------------------------ the CLI


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_fixmatch_run_records_labels_and_mask_rate(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "b.npz", sizes=(64, 16, 16))
    run = tmp_path / "run"
    res = run_cli(
        "train", "--data", data, "--config", fast_config, "--out", run, "--labels", "20", "--semi", "fixmatch"
    )
    assert res.code == 0, res.err
    assert "labels: kept 20 of 64 training images (seed 0); 44 unlabelled" in res.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == {"n": 20, "of": 64, "seed": 0}
    rows = _history(run)
    assert len(rows) == 2 and all(0.0 <= float(r["mask_rate"]) <= 1.0 for r in rows)
    assert {"model.safetensors", "model.json", "config.yaml", "report.html"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "model.json").read_text())["dataset"]["name"] == "b"

    plain = tmp_path / "plain"  # labels alone: a supervised run on the subset, no mask rate
    res = run_cli("train", "--data", data, "--config", fast_config, "--out", plain, "--labels", "0.25", "--quiet")
    assert res.code == 0, res.err
    assert json.loads((plain / "metrics.json").read_text())["labels"] == {"n": 16, "of": 64, "seed": 0}
    assert "mask_rate" not in _history(plain)[0]


def test_unlabeled_sources_feed_semi_without_a_label_subset(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "task.npz", sizes=(32, 12, 12))
    rng = np.random.default_rng(5)  # noise images: nothing like the task's validation or test images
    arrays = {f"{k}_images": rng.integers(0, 256, (n, 12, 12), dtype=np.uint8) for k, n in zip(SPLITS, (30, 10, 10))}
    extra = tmp_path / "extra.npz"
    np.savez(extra, **arrays, **{f"{k}_labels": np.zeros((n, 1), np.uint8) for k, n in zip(SPLITS, (30, 10, 10))})
    run = tmp_path / "run"
    res = run_cli(
        "train", "--data", data, "--config", fast_config, "--out", run, "--semi", "pseudolabel", "--unlabeled", extra
    )
    assert res.code == 0, res.err
    assert "semi pseudolabel: 50 unlabelled images" in res.err  # every split of the extra source, labels ignored
    assert "labels" not in json.loads((run / "metrics.json").read_text())
    assert "mask_rate" in _history(run)[0]


def test_resumed_mean_teacher_run_matches_an_uninterrupted_one(tmp_path, make_npz, run_cli, fast_config, monkeypatch):
    import medclass.training.loop as loop

    data = make_npz(tmp_path / "m.npz", task="multiclass", sizes=(45, 12, 12))
    args = ["--data", data, "--config", fast_config, "--quiet", "--epochs", "3", "--labels", "12"]
    args += ["--semi", "meanteacher", "--set", "semi.rampup_epochs=0"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_cli("train", *args, "--out", reference).code == 0

    class Killed(Exception):
        pass

    log_epoch = loop._log_epoch

    def die_after_epoch_2(row, *rest, **kw):
        log_epoch(row, *rest, **kw)
        if row["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(loop, "_log_epoch", die_after_epoch_2)
    with pytest.raises(Killed):
        run_cli("train", *args, "--out", killed)
    monkeypatch.setattr(loop, "_log_epoch", log_epoch)
    assert any(k.startswith("semi.teacher.") for k in load_file(killed / "state.safetensors"))

    res = run_cli("train", "--resume", "--out", killed)
    assert res.code == 0, res.err
    assert f"resuming {killed} after epoch 2" in res.err
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _history(killed)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _history(reference)]
    a, b = load_file(killed / "state.safetensors"), load_file(reference / "state.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "torch_rng")  # model, optimiser, teacher, generator


@pytest.mark.parametrize(
    ("task", "extra", "expected"),
    [
        ("multilabel", ["--labels", "20"], "semi-supervised training supports binary and multi-class tasks"),
        ("binary", [], "no unlabelled images"),
    ],
)
def test_bad_semi_input_exits_2_with_one_line(task, extra, expected, tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / f"{task}.npz", task=task, sizes=(40, 12, 12))
    res = run_cli(
        "train",
        "--data",
        data,
        "--config",
        fast_config,
        "--out",
        tmp_path / "r",
        "--quiet",
        "--semi",
        "fixmatch",
        *extra,
    )
    assert res.code == 2, (res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medclass: error: ") and expected in lines[0], res.err
