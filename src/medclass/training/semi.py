"""Semi-supervised objectives: what unlabelled images add to a training step (``train --semi``).

Small parts that :func:`medclass.training.loop.train_one_epoch` calls in its explicit loop, no hooks:

* ``fixmatch`` (Sohn et al. 2020): the model's prediction on a weak view (the run's ``augment``) is a
  pseudo-label when its top probability reaches ``semi.threshold``; the strong view
  (``semi.strong``) is trained on it with cross-entropy.
* ``pseudolabel`` (Lee 2013): the model's confident predictions on the weak view are the targets of
  that same view.
* ``meanteacher`` (Tarvainen & Valpola 2017): the mean squared difference between the student's
  probabilities on one weak view and an EMA teacher's on another view of the same images.

Pseudo-labels can be made fairer to rare classes (``semi.fairness``): ``distribution_alignment``
(ReMixMatch, Berthelot et al. 2020) scales the weak-view probabilities by the labelled class prior over
the running mean of the predictions (the last :data:`ALIGN_WINDOW` batches) and renormalises;
``classwise`` (FlexMatch, Zhang et al. 2021) lowers the threshold of classes that few unlabelled images
are confidently predicted as: class ``c`` needs ``threshold * beta_c``, ``beta_c`` = confident
predictions of ``c`` over the largest such count, or over the images not yet confidently predicted
while those are more (the warm-up). Binary tasks (one logit ``z``) are read as the two logits
``[0, z]``, whose softmax is ``[1 - sigmoid(z), sigmoid(z)]``.

The unlabelled weight rises from 0 to ``semi.weight`` over ``semi.rampup_epochs`` along the sigmoid-shaped
``exp(-5 (1 - t)^2)`` of Laine & Aila (2017) and the Mean Teacher paper.

Each step draws ``semi.ratio`` unlabelled images per labelled image, with replacement, from the run's
generator; with that generator's state and :meth:`SemiObjective.state_tensors` in the checkpoint, a
resumed run continues exactly.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medclass.config import RunConfig
from medclass.data.dataset import Dataset, Split, label_counts
from medclass.errors import ConfigError
from medclass.inference import model_device, to_input
from medclass.transforms import Compose, build_augment
from medclass.transforms.histogram import apply_equalize, equalize_options

log = logging.getLogger(__name__)

#: Batches whose mean prediction make the running class distribution of ``distribution_alignment``.
ALIGN_WINDOW = 128
METHODS = ("fixmatch", "meanteacher", "pseudolabel")
FAIRNESS = ("none", "distribution_alignment", "classwise")


# ------------------------------------------------------------------------------------------- parts


def class_logits(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Model outputs as softmax logits: ``(B, 1)`` binary -> ``(B, 2)`` ``[0, z]``; ``(B, K)`` unchanged (float32)."""
    logits = logits.float()
    if task == "binary":
        return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :1]], dim=1)
    return logits


def rampup(progress: float, epochs: float) -> float:
    """The unlabelled weight's factor after ``progress`` epochs: ``exp(-5 (1 - t)^2)``, ``t = progress / epochs``.

    0.0067 at the start, 1 from ``epochs`` on (and always 1 when ``epochs`` is 0).
    """
    if epochs <= 0 or progress >= epochs:
        return 1.0
    t = max(progress, 0.0) / epochs
    return math.exp(-5.0 * (1.0 - t) ** 2)


def align_distribution(probs: torch.Tensor, prior: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
    """ReMixMatch distribution alignment: ``probs * prior / running``, each row renormalised.

    Args:
        probs: ``(B, K)`` predicted probabilities.
        prior: ``(K,)`` class distribution of the labelled images.
        running: ``(K,)`` running mean of predicted probabilities.

    Returns:
        ``(B, K)`` aligned probabilities.
    """
    aligned = probs * (prior / running.clamp(min=1e-6))
    return aligned / aligned.sum(dim=1, keepdim=True).clamp(min=1e-12)


def classwise_thresholds(threshold: float, learned: torch.Tensor, num_classes: int) -> torch.Tensor:
    """FlexMatch thresholds ``threshold * beta_c`` from each unlabelled image's last confident class.

    ``beta_c = sigma_c / max(max_c sigma_c, unused)``: ``sigma_c`` counts the images last predicted as ``c``
    with a probability of at least ``threshold``; ``unused`` the images never so predicted (warm-up:
    while they outnumber every class, every threshold stays low). Linear mapping ``M(x) = x``.

    Args:
        threshold: The fixed threshold ``semi.threshold``.
        learned: ``(N_u,)`` int64 per unlabelled image: its class, or -1 when never confidently predicted.
        num_classes: K.

    Returns:
        ``(K,)`` float32 per-class thresholds.
    """
    sigma = torch.bincount(learned[learned >= 0], minlength=num_classes).float()
    unused = float((learned < 0).sum())
    denominator = max(float(sigma.max()) if len(sigma) else 0.0, unused, 1.0)
    return threshold * sigma / denominator


def pseudo_labels(probs: torch.Tensor, thresholds: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and which are confident enough.

    Args:
        probs: ``(B, K)`` probabilities (no gradient needed).
        thresholds: One threshold, or ``(K,)`` per class (the threshold of each row's predicted class applies).

    Returns:
        ``(labels, mask)``: ``(B,)`` int64 argmax, ``(B,)`` float32 1 where the top probability reaches the threshold.
    """
    top, labels = probs.max(dim=1)
    cut = thresholds[labels] if torch.is_tensor(thresholds) else thresholds
    return labels, (top >= cut).float()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean_b(mask_b * CE(logits_b, labels_b))`` over the whole unlabelled batch (masked rows count as zero).

    Args:
        logits: ``(B, K)`` softmax logits.
        labels: ``(B,)`` int64 targets.
        mask: ``(B,)`` float weights (0/1).

    Returns:
        Scalar loss; 0 (with a gradient) for an empty batch or an empty mask.
    """
    if not len(labels):
        return logits.sum() * 0.0
    return (F.cross_entropy(logits.float(), labels, reduction="none") * mask).mean()


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher consistency: the mean over batch and classes of ``(softmax(s) - softmax(t))^2``.

    Args:
        student_logits: ``(B, K)`` softmax logits (with gradient).
        teacher_logits: ``(B, K)`` softmax logits (no gradient).

    Returns:
        Scalar loss.
    """
    student = torch.softmax(student_logits.float(), dim=1)
    teacher = torch.softmax(teacher_logits.float(), dim=1).detach()
    return F.mse_loss(student, teacher)


def labelled_prior(split: Split, task: str, num_classes: int) -> torch.Tensor:
    """``(K,)`` float32 class distribution of the labelled images (K = 2 for binary; a class without one counts 1)."""
    k = 2 if task == "binary" else num_classes
    counts = np.maximum(label_counts(split.labels, k).astype(np.float64)[:k], 1.0)
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


def check_semi(cfg: RunConfig, task: str) -> None:
    """One-line ConfigErrors for semi settings that cannot work with ``task``."""
    s = cfg.semi
    if s.method not in METHODS:
        raise ConfigError(f"semi.method: unknown method '{s.method}' (use none, {', '.join(METHODS)})")
    if task == "multilabel":
        raise ConfigError("semi-supervised training supports binary and multi-class tasks")
    if s.fairness not in FAIRNESS:
        raise ConfigError(f"semi.fairness: unknown value '{s.fairness}' (use {', '.join(FAIRNESS)})")
    if not 0.0 <= s.threshold <= 1.0:
        raise ConfigError(f"semi.threshold: {s.threshold} is not between 0 and 1")
    if s.ratio < 1:
        raise ConfigError(f"semi.ratio: needs at least one unlabelled image per labelled image, got {s.ratio}")
    if not 0.0 <= s.teacher_ema < 1.0:
        raise ConfigError(f"semi.teacher_ema: {s.teacher_ema} is not in [0, 1)")


def gather_unlabeled(cfg: RunConfig, dataset: Dataset, held_back: torch.Tensor | None) -> torch.Tensor:
    """The unlabelled pool: training images whose labels ``data.labels`` held back, then ``semi.unlabeled``'s.

    Args:
        cfg: The run's configuration.
        dataset: The task (its validation and test images are kept out of the extra sources).
        held_back: ``uint8`` ``(N, C, ...)`` training images without their labels, or None.

    Returns:
        ``uint8`` ``(N_u, C, ...)`` images.

    Raises:
        ConfigError: The pool is empty.
    """
    parts = [held_back] if held_back is not None and len(held_back) else []
    if cfg.semi.unlabeled:
        from medclass.data.unlabeled import pool_unlabeled

        options = {k: v for k, v in cfg.data.file_options().items() if k in ("window", "frame", "max_pixels")}
        extra = pool_unlabeled(list(cfg.semi.unlabeled), dataset, image_options=options)  # its copy detection
        if len(extra):
            parts.append(extra)
    if not parts:
        raise ConfigError(
            f"semi.method {cfg.semi.method}: no unlabelled images "
            "(set --labels below the training size, or give --unlabeled)"
        )
    return torch.cat(parts) if len(parts) > 1 else parts[0]


# ------------------------------------------------------------------------------------ the objective


@dataclass
class UnlabelledBatch:
    """The unlabelled part of one step.

    Attributes:
        index: ``(M,)`` int64 rows of the pool drawn.
        inputs: Float model inputs to append to the labelled batch: ``(2M, C, ...)`` weak then strong
            views (``fixmatch``), ``(M, C, ...)`` weak views (``pseudolabel``, ``meanteacher``'s student).
        teacher_inputs: ``(M, C, ...)`` the teacher's view (``meanteacher``), else None.
    """

    index: torch.Tensor
    inputs: torch.Tensor
    teacher_inputs: torch.Tensor | None = None


class SemiObjective:
    """The unlabelled loss of one method, with its state (teacher, running distribution, confident classes).

    Per step, :meth:`draw` gives the unlabelled inputs (concatenated after the labelled ones for one
    forward pass, so batch norm sees both), :meth:`loss` turns their logits into the weighted
    unlabelled loss and the mask rate, and :meth:`after_step` moves the teacher after the optimiser.

    Args:
        cfg: The run's configuration (``semi``, ``augment``).
        task: ``binary``, ``multiclass`` or ``ordinal``.
        num_classes: Classes of the task.
        pool: ``uint8`` ``(N_u, C, ...)`` unlabelled images (already equalised like the training images).
        prep: The model's preprocessing (:func:`medclass.inference.to_input`).
        prior: ``(K,)`` class distribution of the labelled images.
        weak: The weak augmentation (the run's ``augment``).
        model: The student, copied as the teacher's start (``meanteacher``).
        steps_per_epoch: Optimiser steps per epoch (for the ramp-up).
        amp: The autocast dtype of the teacher's forward pass, or None.
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: str,
        num_classes: int,
        pool: torch.Tensor,
        prep: dict[str, Any],
        prior: torch.Tensor,
        weak: Compose,
        model: nn.Module,
        *,
        steps_per_epoch: int,
        amp: torch.dtype | None = None,
    ) -> None:
        check_semi(cfg, task)
        self.s, self.task, self.pool, self.prep = cfg.semi, task, pool, prep
        self.k = 2 if task == "binary" else num_classes
        self.weak, self.strong = weak, build_augment(cfg.semi.strong)
        self.steps_per_epoch, self.amp = max(steps_per_epoch, 1), amp
        self.prior = prior.float()
        self.steps = 0  # optimiser steps taken (teacher EMA warm-up)
        self.align = torch.zeros(ALIGN_WINDOW, self.k)  # ring buffer of batch-mean predictions
        self.align_count = 0
        self.learned = torch.full((len(pool),), -1, dtype=torch.int64)  # classwise: last confident class
        self.teacher: nn.Module | None = None
        if self.s.method == "meanteacher":
            self.teacher = copy.deepcopy(model)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.begin_epoch(0)

    # -- per epoch

    def begin_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (0-based): the ramp-up position and the epoch's mask-rate mean restart."""
        self.epoch, self.step_in_epoch = epoch, 0
        self._mask_sum, self._mask_steps = 0.0, 0

    def mask_rate(self) -> float:
        """The epoch's mean share of unlabelled images above their threshold (NaN before any step)."""
        return self._mask_sum / self._mask_steps if self._mask_steps else float("nan")

    def weight(self) -> float:
        """The unlabelled loss weight at this step: ``semi.weight`` times :func:`rampup`."""
        progress = self.epoch + self.step_in_epoch / self.steps_per_epoch
        return self.s.weight * rampup(progress, self.s.rampup_epochs)

    # -- per step

    def draw(self, n_labelled: int, generator: torch.Generator) -> UnlabelledBatch:
        """Draw ``semi.ratio * n_labelled`` pool images (with replacement) and make their views, on the CPU.

        Args:
            n_labelled: Labelled images in this step.
            generator: The run's generator (every random number of the draw and the views).

        Returns:
            The :class:`UnlabelledBatch`.
        """
        m = self.s.ratio * n_labelled
        index = torch.randint(len(self.pool), (m,), generator=generator)
        x = to_input(self.pool[index], self.prep)
        weak = self.weak(x, generator)
        if self.s.method == "fixmatch":
            return UnlabelledBatch(index, torch.cat([weak, self.strong(x, generator)]))
        if self.s.method == "meanteacher":
            return UnlabelledBatch(index, weak, self.weak(x, generator))
        return UnlabelledBatch(index, weak)

    def loss(self, logits: torch.Tensor, batch: UnlabelledBatch) -> tuple[torch.Tensor, float]:
        """The weighted unlabelled loss of one step and its mask rate; updates the running state.

        Args:
            logits: The model's outputs on ``batch.inputs``, ``(2M, outputs)`` or ``(M, outputs)``.
            batch: The step's :meth:`draw`.

        Returns:
            ``(weight * loss, mask rate)``: a scalar tensor with gradient, and the share of the ``M``
            images whose pseudo-label (teacher prediction, ``meanteacher``) reached the threshold.
        """
        z = class_logits(logits, self.task)
        if self.s.method == "meanteacher":
            teacher = self._teacher_logits(batch.teacher_inputs, logits.device)
            raw = consistency_loss(z, teacher)
            rate = float((torch.softmax(teacher, 1).max(1).values >= self.s.threshold).float().mean())
        else:
            m = len(batch.index)
            weak, trained = (z[:m], z[m:]) if self.s.method == "fixmatch" else (z, z)
            labels, mask = self.pseudo_label(torch.softmax(weak.detach(), dim=1), batch.index.to(z.device))
            raw = masked_cross_entropy(trained, labels, mask)
            rate = float(mask.mean()) if m else 0.0
        weighted = raw * self.weight()
        self._mask_sum += rate
        self._mask_steps += 1
        self.step_in_epoch += 1
        return weighted, rate

    def pseudo_label(self, probs: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels of weak-view probabilities after ``semi.fairness``; updates its running state.

        Args:
            probs: ``(M, K)`` softmax probabilities of the weak views.
            index: ``(M,)`` their rows in the pool.

        Returns:
            ``(labels, mask)``: ``(M,)`` int64, ``(M,)`` float32.
        """
        fairness = self.s.fairness
        if fairness == "distribution_alignment":
            self.align[self.align_count % ALIGN_WINDOW] = probs.mean(dim=0).float().cpu()
            self.align_count += 1
            running = self.align[: min(self.align_count, ALIGN_WINDOW)].mean(dim=0)
            probs = align_distribution(probs, self.prior.to(probs.device), running.to(probs.device))
        if fairness == "classwise":
            thresholds = classwise_thresholds(self.s.threshold, self.learned, self.k).to(probs.device)
            labels, mask = pseudo_labels(probs, thresholds)
            self._remember(probs, index)
            return labels, mask
        return pseudo_labels(probs, self.s.threshold)

    def _remember(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        """Classwise: record the class of each drawn image predicted at ``threshold`` or above (its last draw wins)."""
        top, labels = probs.detach().cpu().max(dim=1)
        index = index.cpu()
        last = torch.full((len(self.pool),), -1, dtype=torch.int64)
        last.scatter_reduce_(0, index, torch.arange(len(index)), reduce="amax")
        rows = torch.nonzero(last >= 0).flatten()
        pick = last[rows]
        confident = top[pick] >= self.s.threshold
        self.learned[rows[confident]] = labels[pick[confident]]

    @torch.no_grad()
    def _teacher_logits(self, inputs: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """The teacher's softmax logits ``(M, K)`` on its view, in the student's train/eval modes."""
        assert self.teacher is not None and inputs is not None
        with torch.autocast(device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            out = self.teacher(inputs.to(device, non_blocking=True))
        return class_logits(out, self.task)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """After the optimiser step: the teacher moves towards the student (decay ``min(teacher_ema, 1 - 1/(t+1))``)."""
        self.steps += 1
        if self.teacher is None:
            return
        d = min(self.s.teacher_ema, 1.0 - 1.0 / (self.steps + 1))
        student = model.state_dict()
        for k, v in self.teacher.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(student[k].detach(), alpha=1 - d)
            else:
                v.copy_(student[k])

    def sync_modes(self, model: nn.Module) -> None:
        """Give every teacher module the student module's train/eval mode (frozen batch norms stay in eval)."""
        if self.teacher is not None:
            for t, s in zip(self.teacher.modules(), model.modules(), strict=True):
                t.training = s.training

    # -- checkpoint

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The state a resumed run needs, as ``semi.*`` tensors (the teacher under ``semi.teacher.*``)."""
        out = {
            "semi.steps": torch.tensor(self.steps, dtype=torch.int64),
            "semi.align": self.align.clone(),
            "semi.align_count": torch.tensor(self.align_count, dtype=torch.int64),
            "semi.learned": self.learned.clone(),
        }
        if self.teacher is not None:
            out.update({f"semi.teacher.{k}": v.detach().cpu() for k, v in self.teacher.state_dict().items()})
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors` (a checkpoint without them leaves the fresh state)."""
        if "semi.steps" not in tensors:
            log.warning("the checkpoint holds no semi-supervised state; it starts afresh")
            return
        self.steps = int(tensors["semi.steps"])
        self.align = tensors["semi.align"].clone()
        self.align_count = int(tensors["semi.align_count"])
        if len(tensors["semi.learned"]) == len(self.learned):
            self.learned = tensors["semi.learned"].clone()
        if self.teacher is not None:
            teacher = {k[13:]: v for k, v in tensors.items() if k.startswith("semi.teacher.")}
            self.teacher.load_state_dict(teacher)


def build_objective(
    cfg: RunConfig,
    dataset: Dataset,
    train_split: Split,
    model: nn.Module,
    prep: dict[str, Any],
    weak: Compose,
    *,
    unlabeled: torch.Tensor | None,
    steps: int,
    amp: torch.dtype | None = None,
) -> SemiObjective | None:
    """The run's :class:`SemiObjective`, or None when ``semi.method`` is ``none``.

    Args:
        cfg: The run's configuration.
        dataset: The task (for ``semi.unlabeled`` sources and its class count).
        train_split: The labelled training split (its class distribution is the prior).
        model: The student.
        prep: The model's preprocessing without ``equalize`` (``data.equalize`` is applied to the pool here, once).
        weak: The run's training augmentation.
        unlabeled: ``uint8`` ``(N, C, ...)`` training images held back by ``data.labels``, or None.
        steps: Optimiser steps per epoch.
        amp: Autocast dtype, or None.

    Raises:
        ConfigError: A multi-label task, other impossible settings, or no unlabelled image at all.
    """
    if cfg.semi.method == "none":
        return None
    check_semi(cfg, dataset.task)
    pool = gather_unlabeled(cfg, dataset, unlabeled)
    d = cfg.data
    if equalize := equalize_options(d.equalize, clip_limit=d.clahe_clip, tiles=d.clahe_tiles):
        pool = apply_equalize(pool, equalize)  # as the loop equalises its stored training images
    prior = labelled_prior(train_split, dataset.task, dataset.num_classes)
    s = cfg.semi
    how = f"threshold {s.threshold:.3g}, fairness {s.fairness}"
    if s.method == "meanteacher":
        how = f"teacher EMA {s.teacher_ema:.3g}"
    log.info(
        "semi %s: %d unlabelled images, %d per labelled image, %s, weight %.3g (ramp-up %.3g epochs)",
        s.method,
        len(pool),
        s.ratio,
        how,
        s.weight,
        s.rampup_epochs,
    )
    objective = SemiObjective(
        cfg, dataset.task, dataset.num_classes, pool, prep, prior, weak, model, steps_per_epoch=steps, amp=amp
    )
    if objective.teacher is not None:
        objective.teacher.to(model_device(model))
    return objective
