"""The training loop, written out: epochs of shuffled in-memory batches, validation, checkpoints.

Built from small parts (:func:`train_one_epoch`, :func:`medclass.inference.predict_logits`, the optimiser and EMA in
:mod:`medclass.training.optim`, the artefact writers in :mod:`medclass.checkpoint`) rather than a
framework of hooks. A run killed at any point resumes from its last completed epoch with the
same result it would have had.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medclass import checkpoint
from medclass.config import DataConfig, RunConfig, config_from_dict, dump_yaml
from medclass.data.dataset import Dataset, Split, balanced_order, iterate_batches
from medclass.errors import ConfigError, TrainingDiverged
from medclass.inference import model_device, predict_logits, split_tabular, to_input
from medclass.metrics import medmnist
from medclass.models import build_model
from medclass.tasks import logits_to_probs, num_outputs, task_loss
from medclass.training import distributed
from medclass.training.distributed import World, broadcast, check_batch, shard_order
from medclass.training.losses import loss_options
from medclass.training.multimodal import fusion_entry, tabular_schema
from medclass.training.semi import SemiObjective, build_objective
from medclass.training.transfer import set_frozen_eval
from medclass.transforms import Compose, build_augment
from medclass.transforms.histogram import apply_equalize, equalize_options
from medclass.transforms.mixing import Mixer
from medclass.transforms.tta import check_views
from medclass.utils.files import remove_stale_temps, write_text
from medclass.utils.progress import show_progress
from medclass.utils.seed import seed_everything

log = logging.getLogger(__name__)


def preprocessing_for(dataset: Dataset, data: DataConfig | None = None) -> dict[str, Any]:
    """The preprocessing a model trained on ``dataset`` (with ``data`` options) expects; stored in its checkpoint."""
    c = dataset.channels
    prep = {
        "input_shape": list(dataset.sample_shape),
        "channels": c,
        "scale": 1 / 255,
        "mean": [0.5] * c,
        "std": [0.5] * c,
        "resize": "bilinear",
        "colour": "rgb" if c == 3 else "grey",
    }
    if "decode" in dataset.extra:  # how files became pixels: DICOM window, frame of volumes
        prep["decode"] = dict(dataset.extra["decode"])
    if data is not None and (eq := equalize_options(data.equalize, clip_limit=data.clahe_clip, tiles=data.clahe_tiles)):
        prep["equalize"] = eq
    if data is not None and data.tabular:  # clinical fields: the encoding fitted on the training split
        prep["tabular"] = tabular_schema(dataset, data.tabular).to_json()
    return prep


def autocast_dtype(precision: str, device: torch.device | str = "cpu", spatial_dims: int = 2) -> torch.dtype | None:
    """bf16 when asked, or when ``auto`` and the device has native bf16 kernels; else None (fp32).

    ``auto`` keeps 3D models in fp32 on the CPU: oneDNN's bf16 3D convolution backward gave NaN
    weights after one step of the default recipe on AdrenalMNIST3D (AVX-512 BF16 CPU).
    """
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        return None
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if spatial_dims == 3:
        return None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU; other names as PyTorch reads them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: unknown device '{name}' (use auto, cpu or cuda)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{name}' asked for, but PyTorch sees no CUDA GPU")
    return device


def train_one_epoch(
    model: nn.Module,
    split: Split,
    *,
    task: str,
    prep: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
    generator: torch.Generator,
    augment: Compose,
    loss_kwargs: dict[str, Any],
    amp: torch.dtype | None = None,
    ema: Any = None,
    grad_clip: float | None = None,
    on_step: Callable[[float], None] | None = None,
    balanced: bool = False,
    mixer: Mixer | None = None,
    deadline: float | None = None,
    semi: SemiObjective | None = None,
    tabular: torch.Tensor | None = None,
    forward: nn.Module | None = None,
    world: World | None = None,
) -> float:
    """One pass over ``split`` in random order (or class-balanced draws); returns the mean training loss.

    Rows are read and augmented on the CPU (randomness from ``generator``); each batch then moves to
    the model's device. With ``deadline`` (a ``time.perf_counter()`` value), the pass ends early
    after the step that reaches it. With ``semi``, each step appends its unlabelled views to the batch
    (one forward pass) and adds their weighted loss to the supervised one (the loss returned is the sum).
    With ``tabular`` (``(N, T)`` encoded clinical fields of ``split``'s rows), each batch's rows go to the model
    beside its images. With ``world`` (several processes), ``forward`` is ``model`` wrapped in
    ``DistributedDataParallel``, ``batch_size`` is the global batch and this rank takes its slice of every
    batch of the epoch's order (:func:`medclass.training.distributed.shard_order`).
    """
    device = model_device(model)
    model.train()
    set_frozen_eval(model)
    if semi is not None:
        semi.sync_modes(model)
    total, count = 0.0, 0
    order = balanced_order(split.labels, generator) if balanced else None
    if world is not None and world.size > 1:
        order = torch.randperm(len(split), generator=generator) if order is None else order
        order, batch_size = shard_order(order, batch_size, world), check_batch(batch_size, world)
    net = forward if forward is not None else model
    for images, labels, rows in iterate_batches(split, batch_size, shuffle=True, generator=generator, order=order):
        if len(labels) < 2:  # batch norm needs two samples
            continue
        x = augment(to_input(images, prep), generator)
        if mixer:
            x, labels = mixer(x, labels, generator)
        n, unlabelled = len(x), semi.draw(len(x), generator) if semi is not None else None
        if unlabelled is not None:
            x = torch.cat([x, unlabelled.inputs])
        x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)  # no-op on the CPU
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = net(x) if tabular is None else net(x, tabular[rows].to(device, non_blocking=True))
        loss = task_loss(logits[:n], labels, task, **loss_kwargs)
        if unlabelled is not None:
            loss = loss + semi.loss(logits[n:], unlabelled)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        if semi is not None:
            semi.after_step(model)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"training loss became {loss_value} after {count} images of this epoch: "
                "lower optim.lr, or set train.precision=fp32 if bf16 was used"
            )
        total += loss_value * len(labels)
        count += len(labels)
        if on_step:
            on_step(loss_value)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return total / max(count, 1)


def _log_epoch(row: dict[str, Any], epochs: int, level: int = logging.INFO) -> None:
    """One log line for a finished epoch (its history row): losses, validation AUC and ACC, learning rate, time."""
    semi = f", mask rate {row['mask_rate']:.3f}" if "mask_rate" in row else ""
    log.log(
        level,
        "epoch %d/%d: train loss %.4f, val loss %.4f, val AUC %.4f, val ACC %.4f, lr %.3g, %.1f s%s",
        row["epoch"],
        epochs,
        row["train_loss"],
        row["val_loss"],
        row["val_auc"],
        row["val_acc"],
        row["lr"],
        row["seconds"],
        semi,
    )


def history_csv(rows: list[dict[str, Any]]) -> str:
    """Epoch rows as CSV text with a header (the keys of the first row); empty for no rows."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def init_weights(model: nn.Module, cfg: RunConfig) -> None:
    """Start ``model`` from another run or pretrained weights, and freeze its backbone, as the config says."""
    from medclass.training import transfer

    m = cfg.model
    source = m.init_from
    if not source and m.pretrained:
        found = transfer.pretrained_source(m.name, m.weights)
        if found is None:  # timm's hub or its cache; offline, a one-line error naming the file to provide
            transfer.load_matching(model, transfer.hub_weights(m.name), where=f"ImageNet weights of {m.name}")
        source = str(found) if found is not None else None
    if source:
        transfer.start_from(model, source)
    if m.freeze not in ("none", "backbone", "gradual"):
        raise ConfigError(f"model.freeze: unknown value '{m.freeze}' (use none, backbone or gradual)")
    if m.freeze == "backbone":
        transfer.freeze_backbone(model)


def _tta(cfg: RunConfig) -> list[str]:
    try:
        return check_views(cfg.eval.tta)
    except ValueError as err:
        raise ConfigError(f"eval.tta: {err}") from None


def model_meta(cfg: RunConfig, dataset: Dataset, *, threshold: Any = None) -> dict[str, Any]:
    """The ``model.json`` content: everything inference needs besides the weights."""
    from medclass.metrics.positive import checkpoint_entries

    kwargs: dict[str, Any] = {"drop_rate": cfg.model.drop_rate} if cfg.model.drop_rate else {}
    if not cfg.model.name.lower().startswith(("timm/", "classical/")):
        from medclass.models.registry import check_input_size, model_info

        side = int(dataset.sample_shape[-1])
        check_input_size(cfg.model.name, side)
        if model_info(cfg.model.name).takes_img_size:
            kwargs["img_size"] = side
    prep = preprocessing_for(dataset, cfg.data)
    return {
        "architecture": {
            "name": cfg.model.name,
            "spatial_dims": dataset.spatial_dims,
            "in_chans": dataset.channels,
            "num_outputs": num_outputs(dataset.task, dataset.num_classes),
            "kwargs": kwargs,
            **({"truncate": cfg.model.truncate} if cfg.model.truncate else {}),
            **({"norm": "group"} if cfg.model.norm == "group" else {}),
            **({"fusion": fusion} if (fusion := fusion_entry(cfg, dataset, prep.get("tabular"))) else {}),
        },
        "task": dataset.task,
        "label_names": dataset.label_names,
        **checkpoint_entries(  # the positive class (binary) and the triage classes, by name and index
            dataset.task,
            dataset.label_names,
            dataset_name=dataset.name,
            positive_class=cfg.data.positive_class,
            urgent_classes=cfg.eval.urgent_classes,
        ),
        "preprocessing": {**prep, **({"tta": tta} if (tta := _tta(cfg)) else {})},
        "threshold": threshold,
        "operating_point": {"method": cfg.eval.operating_point, "target_sensitivity": cfg.eval.target_sensitivity},
        "dataset": dataset.record(),  # name and content hash, never a path
    }


def fit(
    cfg: RunConfig,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    unlabeled: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` on ``dataset``, writing checkpoints to ``out_dir``; returns the epoch history.

    The best epoch by validation ``cfg.train.select_metric`` is kept in ``model.safetensors``.
    With ``resume``, training continues after the last completed epoch saved in ``out_dir``.

    Messages go to this module's logger (a child of ``medclass``). With ``progress`` and stderr a
    terminal, a tqdm bar shows the steps (and each epoch's line is a DEBUG record); otherwise each
    epoch is one INFO line (epoch, train loss, validation loss, AUC and ACC, learning rate, seconds)
    and nothing is redrawn, so a log file or CI output holds no carriage returns.

    Args:
        cfg: The run's configuration.
        dataset: The data (``train`` and ``val`` splits are used).
        out_dir: The run folder for checkpoints, ``config.yaml`` and ``history.csv``.
        resume: Continue after the last completed epoch saved in ``out_dir``.
        progress: Allow a progress bar; it is shown only when stderr is a terminal.
        unlabeled: ``uint8`` ``(N, C, ...)`` training images without labels (``data.labels``), for ``cfg.semi``
            (:mod:`medclass.training.semi`; its state is saved as ``semi.*`` tensors, history gains ``mask_rate``).

    Returns:
        One row per epoch trained (``history.csv``'s rows).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    generator = seed_everything(tc.seed)
    task, prep = dataset.task, preprocessing_for(dataset, cfg.data)
    arch = model_meta(cfg, dataset)["architecture"]
    model = build_model(arch)
    init_weights(model, cfg)
    fmt = torch.channels_last if dataset.spatial_dims == 2 else torch.channels_last_3d
    device = resolve_device(tc.device)
    world = distributed.setup(device)  # several processes under torchrun: rank 0 writes, validates and logs
    distributed.refuse_unsupported(cfg, world)
    distributed.check_batch(tc.batch_size, world)
    tc.world_size = world.size
    model = model.to(device, memory_format=fmt)
    from medclass.training.optim import EMA, build_optimizer, build_scheduler

    train_split, val = dataset.splits["train"], dataset.splits["val"]
    if eq := prep.pop("equalize", None):  # equalise the stored images once, not every batch
        train_split = replace(train_split, images=apply_equalize(train_split.images, eq))
        val = replace(val, images=apply_equalize(val.images, eq))
    tabular = {"train": split_tabular(prep, train_split), "val": split_tabular(prep, val)}  # None: images only
    steps = sum(1 for s in range(0, len(train_split), tc.batch_size) if len(train_split) - s >= 2)
    epochs = planned = max(tc.epochs, -(-tc.min_steps // max(steps, 1)))
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=epochs)
    ema = EMA(model, tc.ema) if tc.ema else None
    augment = build_augment(cfg.augment)
    a = cfg.augment
    mixer = Mixer(task, dataset.num_classes, mixup_alpha=a.mixup, cutmix_alpha=a.cutmix) if a.enabled else None
    loss_kwargs = loss_options(cfg, train_split, task, dataset.num_classes)
    loss_kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in loss_kwargs.items()}
    amp = autocast_dtype(tc.precision, device, dataset.spatial_dims)
    semi = build_objective(cfg, dataset, train_split, model, prep, augment, unlabeled=unlabeled, steps=steps, amp=amp)
    history: list[dict[str, Any]] = []
    best, start_epoch = -np.inf, 0

    if resume and world.main:
        remove_stale_temps(out_dir)  # left by writes that a killed run never finished
    saved = checkpoint.load_state(out_dir) if resume else None
    if saved is not None:
        tensors, meta = saved
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        checkpoint.restore_optimizer(optimizer, tensors, meta["param_groups"])
        if ema is not None:
            ema.state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            ema.steps = meta.get("ema_steps", 0)
        if semi is not None:
            semi.load_state(tensors)
        generator.set_state(tensors["rng"])
        torch.set_rng_state(tensors["torch_rng"])
        history, best, start_epoch = meta["history"], meta["best"], meta["epoch"]
        if meta.get("epochs", epochs) != epochs:  # a time budget re-planned the schedule
            epochs = meta["epochs"]
            scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=epochs)
        _continue_schedule(scheduler, meta["scheduler"])
        log.info("resuming %s after epoch %d", out_dir, start_epoch)
    forward = distributed.wrap(model, device, world)  # after resuming: every rank starts from the same weights
    if world.main:
        write_text(out_dir / "config.yaml", dump_yaml(cfg))

    bar = None
    if show_progress(progress) and world.main:
        from tqdm import tqdm

        bar = tqdm(
            total=steps * epochs,
            initial=steps * start_epoch,
            unit="step",
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
        )
    eval_model = build_model(arch).to(device, memory_format=fmt) if ema else model
    epoch = start_epoch
    while epoch < epochs:
        t0 = time.perf_counter()
        spent = sum(r["seconds"] for r in history)
        deadline = t0 + tc.max_minutes * 60 - spent if tc.max_minutes and world.size == 1 else None
        if cfg.model.freeze == "gradual":
            from medclass.training.transfer import gradual_unfreeze

            gradual_unfreeze(model, epoch, cfg.model.unfreeze_every)
        if semi is not None:
            semi.begin_epoch(epoch)

        def on_step(loss: float, _e: int = epoch, _n: int = epochs) -> None:
            if bar is not None:
                bar.update(1)
                val_auc = history[-1]["val_auc"] if history else float("nan")
                bar.set_postfix_str(f"epoch {_e + 1}/{_n} loss {loss:.4f} val_auc {val_auc:.4f}")

        train_loss = train_one_epoch(
            model,
            train_split,
            task=task,
            prep=prep,
            optimizer=optimizer,
            scheduler=scheduler,
            batch_size=tc.batch_size,
            generator=generator,
            augment=augment,
            loss_kwargs=loss_kwargs,
            amp=amp,
            ema=ema,
            grad_clip=cfg.optim.grad_clip,
            on_step=on_step,
            balanced=tc.sampler == "balanced",
            mixer=mixer,
            deadline=deadline,
            semi=semi,
            tabular=tabular["train"],
            forward=forward,
            world=world,
        )
        if not world.main:  # rank 0 validates and saves, then says whether the schedule changed or training stops
            plan = broadcast(None, world)
            if plan["epochs"] != epochs:
                epochs = plan["epochs"]
                scheduler = _replan(scheduler, optimizer, cfg, steps, epochs)
            epoch += 1
            if plan["stop"]:
                break
            continue
        if ema is not None:
            eval_model.load_state_dict(ema.state)
        logits = predict_logits(eval_model, val.images, prep, tc.eval_batch_size, tabular=tabular["val"])
        val_loss = float(task_loss(logits, torch.from_numpy(val.labels), task))
        probs = logits_to_probs(logits, task).numpy()
        row = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "val_loss": round(val_loss, 6),
            "val_auc": round(float(medmnist.auc(val.labels, probs, task)), 6),
            "val_acc": round(float(medmnist.acc(val.labels, probs, task)), 6),
            **({"mask_rate": round(semi.mask_rate(), 6)} if semi is not None else {}),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(row)
        if tc.max_minutes and epoch < 2 and (fit := _fit_budget(planned, history, tc.max_minutes)) != epochs:
            epochs = fit
            scheduler = _replan(scheduler, optimizer, cfg, steps, epochs)
            if bar is not None:
                bar.total = steps * epochs
        score = row[f"val_{tc.select_metric}"] if tc.select_metric in ("auc", "acc") else -row["val_loss"]
        if np.isnan(score):
            score = -row["val_loss"]
        if score > best:
            best = score
            checkpoint.save_model(out_dir, eval_model, model_meta(cfg, dataset))
        opt_tensors, groups = checkpoint.flatten_optimizer(optimizer)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update(opt_tensors)
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.state.items()})
        if semi is not None:
            tensors.update(semi.state_tensors())
        tensors["rng"] = generator.get_state()
        tensors["torch_rng"] = torch.get_rng_state()
        checkpoint.save_state(
            out_dir,
            tensors,
            {
                "epoch": epoch + 1,
                "best": best,
                "history": history,
                "param_groups": groups,
                "scheduler": scheduler.state_dict(),
                "ema_steps": ema.steps if ema else 0,
                "epochs": epochs,
            },
        )
        write_text(out_dir / "history.csv", history_csv(history))
        _log_epoch(row, epochs, logging.INFO if bar is None else logging.DEBUG)  # the bar shows it on a terminal
        spent = sum(r["seconds"] for r in history) / 60
        epoch += 1
        stop = bool(tc.max_minutes and epoch < epochs and spent + row["seconds"] / 60 > tc.max_minutes)
        broadcast({"epochs": epochs, "stop": stop}, world)
        if stop:
            log.warning(
                "time budget of %.3g min reached after epoch %d of %d (%.1f min)", tc.max_minutes, epoch, epochs, spent
            )
            break
    if bar is not None:
        bar.close()
    return history


def _replan(scheduler: Any, optimizer: torch.optim.Optimizer, cfg: RunConfig, steps: int, epochs: int) -> Any:
    """A new learning-rate schedule over ``epochs``, continued from ``scheduler``'s position."""
    from medclass.training.optim import build_scheduler

    state = scheduler.state_dict()
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=epochs)
    _continue_schedule(scheduler, state)
    return scheduler


def _fit_budget(
    planned: int, history: list[dict[str, Any]], max_minutes: float, report: Callable[[str], None] | None = None
) -> int:
    """The number of epochs that fit ``max_minutes`` (at least those done, at most ``planned``).

    Judged after each of the first two epochs by the latest one's duration: the first carries one-off
    costs (kernel selection, allocations), so the second corrects its estimate, in either direction,
    while the learning-rate schedule has barely moved. A shortened plan is reported to ``report``, by
    default as a warning on this module's logger (fewer epochs than asked for are trained).
    """
    done, spent = len(history), sum(r["seconds"] for r in history)
    per_epoch = max(history[-1]["seconds"], 1e-9)
    fit = max(done, 1, min(planned, done + int((max_minutes * 60 - spent) // per_epoch)))
    if fit < planned:
        (report or log.warning)(
            f"time budget of {max_minutes:.3g} min: {fit} of {planned} epochs fit; the schedule is shortened to {fit}"
        )
    return fit


def _continue_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]) -> None:
    """Move ``scheduler`` to the step saved in ``state`` and set the optimiser's learning rates for that step.

    The schedule's shape stays ``scheduler``'s own, so a plan shortened by a time budget continues from
    where training stands.
    """
    scheduler.load_state_dict(dict(state, lr_lambdas=[None] * len(scheduler.lr_lambdas)))
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def resume_config(out_dir: str | Path) -> RunConfig:
    """The configuration saved in a run folder (for ``--resume``)."""
    from medclass.config import read_yaml

    path = Path(out_dir) / "config.yaml"
    return config_from_dict(read_yaml(path), str(path))
