"""DP-SGD recipe search on PneumoniaMNIST (28 px): non-private vs DP at a target epsilon, central or federated IID.

One run per call, appended as a JSON line to ``--results`` (default ``bench/results/dp_recipe.jsonl``): the
command, the settings, test AUC/ACC, the epsilon spent (per client), the noise multiplier and the minutes.

* ``--clients 1`` (central): one trainer over the whole training split for ``--epochs`` epochs (each a "round").
* ``--clients K``: a seeded IID split into ``K`` equal clients and ``--rounds`` rounds of FedAvg; each client runs
  ``--local-epochs`` of (DP-)SGD per round from the global weights, the server averages the clients' weights
  (weighted by rows). With GroupNorm the model has no buffers, so averaging the parameters is the whole model.
  Each client's noise is calibrated for its own rows and its steps over all rounds.

Inputs are normalised with fixed values (``(x / 255 - 0.5) / 0.5``), not statistics of the private data.
Learning rate is constant unless ``--decay cos``; ``--tail-average`` also tests the mean global model of the last
half of the rounds (server-side post-processing); the model is ``smallcnn`` with BatchNorm swapped for GroupNorm
(:func:`medclass.federated.privacy.make_private_compatible`) unless ``--norm bn`` (non-private only).

Usage:
    OMP_NUM_THREADS=1 MEDCLASS_DATA_DIR=../shared/data/medmnist PYTHONPATH=src nice -n 10 \
        python bench/dp_recipe.py --dp --eps 8 --batch 512 --lr 2 --momentum 0.5 --epochs 15 --widths 16 32 64
    # the federated recipe (PrivacyConfig defaults)
    ... --dp --clients 5 --rounds 10 --local-epochs 2 --eps 8 --batch 256 --lr 1 --decay cos --momentum 0.5 \
        --widths 8 16 32
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medclass.data.dataset import Split
from medclass.data.sources import load_dataset
from medclass.federated.privacy import (
    PrivacyConfig,
    PrivateTrainer,
    federation_steps,
    make_private_compatible,
    round_lr,
    set_lr,
)
from medclass.inference import to_input
from medclass.models import create_model
from medclass.tasks import task_loss

PREP = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}
log = logging.getLogger("dp_recipe")


def evaluate(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """Test AUC and accuracy (threshold 0.5) of a binary model."""
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(split), 512):
            scores.append(torch.sigmoid(model(to_input(split.images[start : start + 512], PREP))[:, 0]))
    p = torch.cat(scores).numpy()
    y = split.labels.astype(int)
    return float(roc_auc_score(y, p)), float(((p > 0.5) == y).mean())


def build(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    kw = {"widths": tuple(args.widths)} if args.widths else {}
    model = create_model(args.model, in_chans=1, num_classes=1, **kw)
    return model if args.norm == "bn" else make_private_compatible(model, groups=args.groups)


def optimizer_for(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optim == "adam":
        return torch.optim.Adam(model.parameters(), lr=args.lr)
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)


def plain_epochs(model: torch.nn.Module, opt: torch.optim.Optimizer, split: Split, epochs: int, args, gen) -> None:
    """Non-private training: shuffled mini-batches of ``args.batch``."""
    labels = torch.as_tensor(split.labels, dtype=torch.float32)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(split), generator=gen)
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            if len(idx) < 2:
                continue
            loss = task_loss(model(to_input(split.images[idx], PREP)), labels[idx], "binary")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def iid_clients(split: Split, k: int, seed: int) -> list[Split]:
    order = np.random.default_rng(seed).permutation(len(split))
    return [split.subset(part) for part in np.array_split(order, k)]


def run(args: argparse.Namespace) -> dict:
    data = load_dataset("pneumoniamnist")
    train, test = data.splits["train"], data.splits["test"]
    gen = torch.Generator().manual_seed(args.seed)
    config = PrivacyConfig(
        target_epsilon=args.eps,
        delta=args.delta,
        max_grad_norm=args.clip,
        batch_size=args.batch,
        physical_batch_size=args.physical,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    model = build(args)
    clients = [train] if args.clients == 1 else iid_clients(train, args.clients, args.seed)
    rounds, local = (args.epochs, 1) if args.clients == 1 else (args.rounds, args.local_epochs)
    # one model, optimiser and trainer per client; each round starts from the global weights
    locals_ = [copy.deepcopy(model) for _ in clients]
    opts = [optimizer_for(m, args) for m in locals_]
    trainers = []
    if args.dp:
        for i, (m, o, c) in enumerate(zip(locals_, opts, clients)):
            steps = federation_steps(len(c), args.batch, rounds=rounds, local_epochs=local)
            cfg = PrivacyConfig(**{**config.__dict__, "seed": args.seed * 100 + i})
            trainers.append(PrivateTrainer(m, o, num_samples=len(c), total_steps=steps, config=cfg))
    eps = []
    curve = []
    tail: dict[str, torch.Tensor] = {}
    for r in range(rounds):
        if args.decay == "cos":  # every client's learning rate follows one cosine over the rounds
            for opt in opts:
                set_lr(opt, round_lr(PrivacyConfig(lr=args.lr), r, rounds))
        states, sizes, eps = [], [], []
        for i, c in enumerate(clients):
            locals_[i].load_state_dict(model.state_dict())
            if args.dp:
                eps.append(trainers[i].train(c, task="binary", prep=PREP, epochs=local))
            else:
                plain_epochs(locals_[i], opts[i], c, local, args, gen)
            states.append(locals_[i].state_dict())
            sizes.append(len(c))
        w = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        avg = {k: sum(float(wi) * s[k].float() for wi, s in zip(w, states)).to(states[0][k].dtype) for k in states[0]}
        model.load_state_dict(avg)
        if args.tail_average and r >= rounds // 2:  # server-side mean of the global model over the last half
            k = r - rounds // 2
            tail = (
                {n: v.clone() for n, v in avg.items()} if k == 0 else {n: (tail[n] * k + avg[n]) / (k + 1) for n in avg}
            )
        if (r + 1) % max(1, rounds // 5) == 0:
            curve.append((r + 1, round(evaluate(model, test)[0], 4)))
            log.info("round %d: test AUC %.4f, eps %s", r + 1, curve[-1][1], [round(e, 2) for e in eps])
    auc, acc = evaluate(model, test)
    if args.tail_average:
        averaged = copy.deepcopy(model)
        averaged.load_state_dict(tail)
        tail_auc = round(evaluate(averaged, test)[0], 4)
    row = {
        "command": " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "results"},
        "test_auc": round(auc, 4),
        "test_acc": round(acc, 4),
        "epsilon_per_client": [round(e, 3) for e in eps] if args.dp else None,
        "noise_multiplier": [round(t.noise_multiplier, 4) for t in trainers] if args.dp else None,
        "sample_rate": [round(t.sample_rate, 4) for t in trainers] if args.dp else None,
        "steps_per_client": [t.steps_taken for t in trainers] if args.dp else None,
        "curve": curve,
        "test_auc_tail_average": tail_auc if args.tail_average else None,
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dp", action="store_true")
    p.add_argument("--eps", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--physical", type=int, default=256)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--decay", choices=("none", "cos"), default="none", help="learning rate over the rounds")
    p.add_argument("--tail-average", action="store_true", help="also test the mean global model of the last half")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--optim", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--epochs", type=int, default=10, help="central: epochs")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--widths", type=int, nargs="+", help="smallcnn stage widths (default 32 64 128)")
    p.add_argument("--norm", choices=("gn", "bn"), default="gn")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default="bench/results/dp_recipe.jsonl")
    args = p.parse_args()
    if args.dp and args.norm == "bn":
        p.error("--dp needs --norm gn (BatchNorm has no per-sample gradients)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    row = run(args)
    print(json.dumps(row))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
