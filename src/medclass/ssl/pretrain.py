"""The pretraining loop: an explicit pass over the image pool per epoch, checkpoints, and the encoder's run folder.

A pretraining run folder holds

* ``model.safetensors`` + ``model.json``: the encoder (the architecture without a head, ``task: embedding``),
  its preprocessing and how it was made: what ``train --init-from RUN`` and ``evaluate --probe`` read;
* ``state.safetensors`` + ``state.json``: the method's full state (projector, predictor, target network,
  decoder), optimiser, RNG and history, after every epoch, for ``--resume``;
* ``config.yaml``, ``history.csv`` (epoch, loss, learning rate, seconds) and, once done, ``metrics.json``
  with the frozen encoder's linear and k-NN probes on the task's labels.

Only training images are pooled: the task's training split and the ``pretrain.unlabeled`` sources cleared
of copies of the task's validation and test images (:func:`medclass.data.unlabeled.pool_unlabeled`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medclass import checkpoint
from medclass.config import OptimConfig, RunConfig, dump_yaml
from medclass.data.dataset import Dataset
from medclass.errors import TrainingDiverged
from medclass.inference import to_input
from medclass.models import build_model
from medclass.ssl.methods import SSLMethod, build_method
from medclass.training.loop import autocast_dtype, history_csv, model_meta, preprocessing_for, resolve_device
from medclass.training.optim import build_scheduler
from medclass.transforms import build_augment
from medclass.utils.files import remove_stale_temps, write_text
from medclass.utils.progress import show_progress
from medclass.utils.seed import seed_everything

log = logging.getLogger(__name__)


def encoder_meta(cfg: RunConfig, dataset: Dataset, *, images: int, pooled: dict[str, int]) -> dict[str, Any]:
    """``model.json`` of a pretraining run: the headless architecture, preprocessing and provenance."""
    meta = model_meta(cfg, dataset)
    arch = {**meta["architecture"], "num_outputs": 0}
    pc = cfg.pretrain
    return {
        "architecture": arch,
        "task": "embedding",
        "label_names": [],
        "preprocessing": meta["preprocessing"],
        "dataset": meta["dataset"],
        "pretrain": {"method": pc.method, "images": images, "unlabeled": pooled, "seed": cfg.train.seed},
    }


def _optimizer(method: SSLMethod, cfg: RunConfig, steps: int, epochs: int):
    pc = cfg.pretrain
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=pc.lr, weight_decay=pc.weight_decay)
    sched_cfg = OptimConfig(lr=pc.lr, schedule="cosine", warmup_epochs=pc.warmup_epochs)
    return optimizer, build_scheduler(optimizer, sched_cfg, steps_per_epoch=steps, epochs=epochs)


def pretrain(
    cfg: RunConfig,
    dataset: Dataset,
    pool: torch.Tensor,
    out_dir: str | Path,
    *,
    pooled: dict[str, int] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Pretrain ``cfg.model.name`` with ``cfg.pretrain.method`` on the task's training images plus ``pool``.

    Args:
        cfg: The run's configuration (``pretrain`` section; ``model``, ``data``, ``train.seed``/``device``/``threads``).
        dataset: The task; only its training split is used.
        pool: ``uint8`` ``(N, C, ...)`` further unlabelled images of the task's shape (already cleared of
            validation and test copies), possibly empty.
        out_dir: The run folder.
        pooled: Images kept per unlabelled source, for ``model.json``.
        resume: Continue after the last completed epoch saved in ``out_dir``.
        progress: Allow a progress bar (only on a terminal).

    Returns:
        One row per epoch: ``epoch``, ``loss``, ``lr``, ``seconds``.
    """
    from medclass.training.transfer import load_matching, read_weights

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pc, tc = cfg.pretrain, cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    generator = seed_everything(tc.seed)
    images = torch.cat([dataset.splits["train"].images, pool]) if len(pool) else dataset.splits["train"].images
    prep = preprocessing_for(dataset, cfg.data)
    meta = encoder_meta(cfg, dataset, images=len(images), pooled=pooled or {})
    encoder = build_model(meta["architecture"])
    if cfg.model.init_from:
        load_matching(encoder, read_weights(cfg.model.init_from), where=cfg.model.init_from)
    device = resolve_device(tc.device)
    method = build_method(pc, encoder, dataset.sample_shape).to(device)
    views = build_augment(pc.views)
    batch = min(pc.batch_size, len(images))
    if batch < 2:
        raise TrainingDiverged(f"pretrain: {len(images)} image(s) cannot make a batch of two")
    steps = len(images) // batch  # whole batches only: contrastive losses need the same batch size throughout
    epochs = max(pc.epochs, -(-pc.min_steps // steps))
    optimizer, scheduler = _optimizer(method, cfg, steps, epochs)
    amp = autocast_dtype(tc.precision, device, dataset.spatial_dims)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        remove_stale_temps(out_dir)
    saved = checkpoint.load_state(out_dir) if resume else None
    if saved is not None:
        tensors, state = saved
        method.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("method.")})
        checkpoint.restore_optimizer(optimizer, tensors, state["param_groups"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(tensors["rng"])
        torch.set_rng_state(tensors["torch_rng"])
        history, start = state["history"], state["epoch"]
        log.info("resuming %s after epoch %d", out_dir, start)
    write_text(out_dir / "config.yaml", dump_yaml(cfg))
    log.info(
        "pretrain %s on %d images (%d training + %d unlabelled): %d epochs of %d steps",
        pc.method,
        len(images),
        len(dataset.splits["train"]),
        len(pool),
        epochs,
        steps,
    )
    bar = None
    if show_progress(progress):
        from tqdm import tqdm

        bar = tqdm(total=steps * epochs, initial=steps * start, unit="step", dynamic_ncols=True, file=sys.stderr)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        method.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for i in range(steps):
            x = to_input(images[order[i * batch : (i + 1) * batch]], prep).to(device)
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss = method.loss(x, generator, views)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"pretraining loss became {value} in epoch {epoch + 1}: "
                    "lower pretrain.lr, or set train.precision=fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            method.after_step((epoch * steps + i + 1) / (epochs * steps))
            total += value
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} loss {value:.4f}")
        row = {
            "epoch": epoch + 1,
            "loss": round(total / steps, 6),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        history.append(row)
        log.log(
            logging.DEBUG if bar is not None else logging.INFO,
            "epoch %d/%d: %s loss %.4f, lr %.3g, %.1f s",
            epoch + 1,
            epochs,
            pc.method,
            row["loss"],
            row["lr"],
            row["seconds"],
        )
        checkpoint.save_model(out_dir, method.encoder, meta)
        opt_tensors, groups = checkpoint.flatten_optimizer(optimizer)
        tensors = {f"method.{k}": v for k, v in method.state_dict().items()}
        tensors.update(opt_tensors)
        tensors["rng"] = generator.get_state()
        tensors["torch_rng"] = torch.get_rng_state()
        state = {"epoch": epoch + 1, "history": history, "param_groups": groups, "scheduler": scheduler.state_dict()}
        checkpoint.save_state(out_dir, tensors, state)
        write_text(out_dir / "history.csv", history_csv(history))
    if bar is not None:
        bar.close()
    return history
