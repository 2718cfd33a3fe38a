"""The training loop, written out: epochs of shuffled in-memory batches, validation, checkpoints.

Built from small parts (:func:`train_one_epoch`, :func:`predict_probs`, the optimiser and EMA in
:mod:`medclass.train.optim`, the artefact writers in :mod:`medclass.checkpoint`) rather than a
framework of hooks. A run killed at any point resumes from its last completed epoch with the
same result it would have had.
"""

from __future__ import annotations

import csv
import io
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
from medclass.data.dataset import Dataset, Split, balanced_order, iterate_batches, label_counts
from medclass.errors import ConfigError
from medclass.metrics import medmnist
from medclass.models import create_model
from medclass.tasks import logits_to_probs, num_outputs, prior_logit_offset, task_loss
from medclass.train.transfer import set_frozen_eval
from medclass.transforms import Compose, build_augment
from medclass.transforms.histogram import apply_equalize, equalize_options
from medclass.transforms.mixing import Mixer
from medclass.transforms.tta import check_views, tta_views
from medclass.trust.scaling import apply_calibration
from medclass.utils.files import remove_stale_temps, write_text
from medclass.utils.seed import seed_everything


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
    return prep


def to_input(images: torch.Tensor, prep: dict[str, Any]) -> torch.Tensor:
    """``uint8`` ``(B, C, ...)`` -> normalised float32 model input (channels-last memory layout).

    Applies the stored contrast equalisation (``prep["equalize"]``) first, when there is one.
    """
    images = apply_equalize(images, prep.get("equalize"))
    c = images.shape[1]
    shape = (1, c) + (1,) * (images.ndim - 2)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(shape)
    x = (images.float() * prep["scale"] - mean) / std
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return x.contiguous(memory_format=fmt)


def autocast_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """bf16 when asked, or when ``auto`` and the device has native bf16 kernels; else None (fp32)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        return None
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live (its first parameter, else its first buffer; the CPU when it has neither)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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


def class_weights_for(split: Split, task: str, num_classes: int, mode: str | None) -> torch.Tensor | None:
    """``balanced`` class weights (n / (k * count)) from the training labels, or None."""
    if not mode:
        return None
    counts = label_counts(split.labels, num_classes).astype(np.float64)
    if task == "multilabel":
        known = (~np.isnan(split.labels)).sum(0)
        return torch.tensor(np.clip((known - counts) / np.maximum(counts, 1), 0, 100), dtype=torch.float32)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


def loss_options(cfg: RunConfig, split: Split, task: str, num_classes: int) -> dict[str, Any]:
    """Keyword options of :func:`~medclass.tasks.task_loss` from the config and the training labels."""
    o = cfg.optim
    if o.loss not in ("ce", "focal"):
        raise ConfigError(f"optim.loss: unknown loss '{o.loss}' (use ce or focal)")
    if cfg.train.sampler not in ("random", "balanced"):
        raise ConfigError(f"train.sampler: unknown sampler '{cfg.train.sampler}' (use random or balanced)")
    return {
        "label_smoothing": o.label_smoothing,
        "class_weights": class_weights_for(split, task, num_classes, o.class_weight),
        "focal_gamma": o.focal_gamma if o.loss == "focal" else 0.0,
        "logit_offset": prior_logit_offset(split.labels, task, num_classes, o.logit_adjust) if o.logit_adjust else None,
    }


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
) -> float:
    """One pass over ``split`` in random order (or class-balanced draws); returns the mean training loss.

    Rows are read and augmented on the CPU (randomness from ``generator``); each batch then moves to
    the model's device. With ``deadline`` (a ``time.perf_counter()`` value), the pass ends early
    after the step that reaches it.
    """
    device = model_device(model)
    model.train()
    set_frozen_eval(model)
    total, count = 0.0, 0
    order = balanced_order(split.labels, generator) if balanced else None
    for images, labels, _ in iterate_batches(split, batch_size, shuffle=True, generator=generator, order=order):
        if len(labels) < 2:  # batch norm needs two samples
            continue
        x = augment(to_input(images, prep), generator)
        if mixer:
            x, labels = mixer(x, labels, generator)
        x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)  # no-op on the CPU
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(x)
        loss = task_loss(logits, labels, task, **loss_kwargs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        loss_value = loss.item()
        total += loss_value * len(labels)
        count += len(labels)
        if on_step:
            on_step(loss_value)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return total / max(count, 1)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, prep: dict[str, Any], batch_size: int = 512) -> torch.Tensor:
    """Logits ``(N, outputs)`` for a ``uint8`` image stack, in evaluation mode.

    With ``prep["tta"]`` (test-time augmentation views), the mean of the views' logits. Batches run
    on the model's device; the logits come back on the CPU.
    """
    model.eval()
    device = model_device(model)
    views = prep.get("tta") or []
    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = to_input(images[i : i + batch_size], prep).to(device, non_blocking=True)
        if views:
            outs.append(torch.stack([model(v).float() for v in tta_views(x, views)]).mean(0).cpu())
        else:
            outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def predict_probs(
    model: nn.Module,
    images: torch.Tensor,
    task: str,
    prep: dict[str, Any],
    batch_size: int = 512,
    *,
    calibration: dict[str, Any] | None = None,
) -> np.ndarray:
    """Probabilities ``(N, K)`` (K = 2 for binary) for a ``uint8`` image stack.

    Args:
        model: The network.
        images: ``uint8`` ``(N, C, ...)``.
        task: Task type.
        prep: The checkpoint's preprocessing (with optional ``tta`` views).
        batch_size: Inference batch size.
        calibration: The checkpoint's fitted calibration (temperature or vector scaling), applied
            to the logits; ``None`` leaves them as they are.
    """
    logits = predict_logits(model, images, prep, batch_size)
    if logits.numel() == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return logits_to_probs(apply_calibration(logits, calibration), task).numpy()


def _fmt_row(row: dict[str, Any]) -> str:
    return f"val_auc {row['val_auc']:.4f} val_acc {row['val_acc']:.4f}"


def history_csv(rows: list[dict[str, Any]]) -> str:
    """Epoch rows as CSV text with a header (the keys of the first row); empty for no rows."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build the network described by a checkpoint's ``architecture`` entry (truncated when it says so)."""
    model = create_model(
        arch["name"],
        in_chans=arch["in_chans"],
        num_classes=arch["num_outputs"],
        spatial_dims=arch.get("spatial_dims"),
        **arch.get("kwargs", {}),
    )
    if arch.get("truncate"):
        from medclass.models.truncate import truncate_stages

        model = truncate_stages(model, int(arch["truncate"]), name=arch["name"])
    return model


def init_weights(model: nn.Module, cfg: RunConfig) -> None:
    """Start ``model`` from another run or pretrained weights, and freeze its backbone, as the config says."""
    from medclass.train import transfer

    m = cfg.model
    source = m.init_from
    if not source and m.pretrained:
        found = transfer.pretrained_source(m.name, m.weights)
        if found is None:
            if not m.name.lower().startswith("timm/"):
                raise ConfigError(
                    f"model.pretrained: no weights for '{m.name}' (set model.weights or $MEDCLASS_WEIGHTS_DIR)"
                )
            donor = create_model(m.name, pretrained=True)  # timm's hub: needs internet or its cache
            transfer.load_matching(model, donor.state_dict(), where=f"timm pretrained {m.name}")
        source = str(found) if found is not None else None
    if source:
        report = transfer.load_matching(model, transfer.read_weights(source), where=source)
        print(
            f"initialised from {source}: {len(report['loaded'])} tensors loaded, {len(report['adapted'])} adapted, "
            f"{len(report['skipped'])} new"
        )
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
    kwargs: dict[str, Any] = {"drop_rate": cfg.model.drop_rate} if cfg.model.drop_rate else {}
    if not cfg.model.name.lower().startswith(("timm/", "classical/")):
        from medclass.models.registry import check_input_size, model_info

        side = int(dataset.sample_shape[-1])
        check_input_size(cfg.model.name, side)
        if model_info(cfg.model.name).takes_img_size:
            kwargs["img_size"] = side
    return {
        "architecture": {
            "name": cfg.model.name,
            "spatial_dims": dataset.spatial_dims,
            "in_chans": dataset.channels,
            "num_outputs": num_outputs(dataset.task, dataset.num_classes),
            "kwargs": kwargs,
            **({"truncate": cfg.model.truncate} if cfg.model.truncate else {}),
        },
        "task": dataset.task,
        "label_names": dataset.label_names,
        "preprocessing": {**preprocessing_for(dataset, cfg.data), **({"tta": tta} if (tta := _tta(cfg)) else {})},
        "threshold": threshold,
        "operating_point": {"method": cfg.eval.operating_point, "target_sensitivity": cfg.eval.target_sensitivity},
        "dataset": {"name": dataset.name, "source": dataset.source, "md5": dataset.md5},
    }


def fit(
    cfg: RunConfig,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train ``cfg`` on ``dataset``, writing checkpoints to ``out_dir``; returns the epoch history.

    The best epoch by validation ``cfg.train.select_metric`` is kept in ``model.safetensors``.
    With ``resume``, training continues after the last completed epoch saved in ``out_dir``.
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
    model = model.to(device, memory_format=fmt)
    from medclass.train.optim import EMA, build_optimizer, build_scheduler

    train_split, val = dataset.splits["train"], dataset.splits["val"]
    if eq := prep.pop("equalize", None):  # equalise the stored images once, not every batch
        train_split = replace(train_split, images=apply_equalize(train_split.images, eq))
        val = replace(val, images=apply_equalize(val.images, eq))
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
    amp = autocast_dtype(tc.precision, device)
    history: list[dict[str, Any]] = []
    best, start_epoch = -np.inf, 0

    if resume:
        remove_stale_temps(out_dir)  # left by writes that a killed run never finished
    saved = checkpoint.load_state(out_dir) if resume else None
    if saved is not None:
        tensors, meta = saved
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        checkpoint.restore_optimizer(optimizer, tensors, meta["param_groups"])
        if ema is not None:
            ema.state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            ema.steps = meta.get("ema_steps", 0)
        generator.set_state(tensors["rng"])
        torch.set_rng_state(tensors["torch_rng"])
        history, best, start_epoch = meta["history"], meta["best"], meta["epoch"]
        if meta.get("epochs", epochs) != epochs:  # a time budget re-planned the schedule
            epochs = meta["epochs"]
            scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=epochs)
        _continue_schedule(scheduler, meta["scheduler"])
        log(f"resuming {out_dir} after epoch {start_epoch}")
    write_text(out_dir / "config.yaml", dump_yaml(cfg))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps * epochs, initial=steps * start_epoch, unit="step", dynamic_ncols=True, leave=True)
    eval_model = build_model(arch).to(device, memory_format=fmt) if ema else model
    epoch = start_epoch
    while epoch < epochs:
        t0 = time.perf_counter()
        spent = sum(r["seconds"] for r in history)
        deadline = t0 + tc.max_minutes * 60 - spent if tc.max_minutes else None
        if cfg.model.freeze == "gradual":
            from medclass.train.transfer import gradual_unfreeze

            gradual_unfreeze(model, epoch, cfg.model.unfreeze_every)

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
        )
        if ema is not None:
            eval_model.load_state_dict(ema.state)
        logits = predict_logits(eval_model, val.images, prep, tc.eval_batch_size)
        val_loss = float(task_loss(logits, torch.from_numpy(val.labels), task))
        probs = logits_to_probs(logits, task).numpy()
        row = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "val_loss": round(val_loss, 6),
            "val_auc": round(float(medmnist.auc(val.labels, probs, task)), 6),
            "val_acc": round(float(medmnist.acc(val.labels, probs, task)), 6),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(row)
        if tc.max_minutes and epoch < 2 and (fit := _fit_budget(planned, history, tc.max_minutes, log)) != epochs:
            epochs = fit
            state = scheduler.state_dict()
            scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=epochs)
            _continue_schedule(scheduler, state)
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
        if bar is None:
            log(f"epoch {epoch + 1}/{epochs} loss {train_loss:.4f} {_fmt_row(row)}")
        spent = sum(r["seconds"] for r in history) / 60
        epoch += 1
        if tc.max_minutes and epoch < epochs and spent + row["seconds"] / 60 > tc.max_minutes:
            log(f"time budget of {tc.max_minutes:.3g} min reached after epoch {epoch} of {epochs} ({spent:.1f} min)")
            break
    if bar is not None:
        bar.close()
    return history


def _fit_budget(planned: int, history: list[dict[str, Any]], max_minutes: float, log: Callable[[str], None]) -> int:
    """The number of epochs that fit ``max_minutes`` (at least those done, at most ``planned``).

    Judged after each of the first two epochs by the latest one's duration: the first carries one-off
    costs (kernel selection, allocations), so the second corrects its estimate, in either direction,
    while the learning-rate schedule has barely moved.
    """
    done, spent = len(history), sum(r["seconds"] for r in history)
    per_epoch = max(history[-1]["seconds"], 1e-9)
    fit = max(done, 1, min(planned, done + int((max_minutes * 60 - spent) // per_epoch)))
    if fit < planned:
        log(f"time budget of {max_minutes:.3g} min: {fit} of {planned} epochs fit; the schedule is shortened to {fit}")
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
