"""Data-parallel training on PyTorch's own stack: ``torch.distributed`` started by ``torchrun``.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) :func:`setup` joins the process group (gloo on
the CPU, NCCL on CUDA) and the loop wraps the model in ``DistributedDataParallel``. Every rank draws the epoch's
row order from the run's one seeded generator, so all ranks hold the same order; each global batch
(``train.batch_size`` rows) is cut into ``world`` equal slices and rank ``r`` takes slice ``r``
(:func:`shard_order`). Gradients are averaged across ranks and batch norm is synchronised (PyTorch's
``SyncBatchNorm`` on CUDA, :class:`~medclass.training.syncbn.CpuSyncBatchNorm` on the CPU), so one step at global
batch ``B`` on ``W`` ranks is the step one process takes on the same ``B`` rows. Rank 0 alone validates, writes
the run folder and logs; the schedule it decides (a time budget's epoch count, an early stop) is broadcast to the
others.

``medclass train --nproc N`` runs ``torchrun --standalone --nproc-per-node N -m medclass train ...`` for one
machine (:func:`launch`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from medclass.errors import ConfigError, MedclassError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0 .. size - 1; rank 0 writes the run folder.
        size: Number of processes (1: no distribution).
    """

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes, logs and validates (rank 0)."""
        return self.rank == 0


def current() -> World:
    """The world of the initialised process group, or a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def quiet_other_ranks() -> None:
    """Under ``torchrun``, keep only rank 0's log: other ranks log warnings and errors only."""
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger("medclass").setLevel(logging.WARNING)


def setup(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment (no-op for one process).

    The backend is NCCL for CUDA devices and gloo otherwise. A collective that waits longer than
    ``MEDCLASS_DIST_TIMEOUT`` seconds (default 600) fails instead of hanging.
    """
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=float(os.environ.get("MEDCLASS_DIST_TIMEOUT", "600")))
        dist.init_process_group(backend, timeout=timeout)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    quiet_other_ranks()
    return current()


def check_batch(batch_size: int, world: World) -> int:
    """The per-rank batch for global ``batch_size`` on ``world``.

    Raises:
        ConfigError: A global batch that does not split evenly.
    """
    if batch_size % world.size:
        raise ConfigError(
            f"train.batch_size {batch_size} does not split evenly over {world.size} processes; use a multiple of "
            f"{world.size} (the batch size is the global batch)"
        )
    return batch_size // world.size


def shard_order(order: torch.Tensor, batch_size: int, world: World) -> torch.Tensor:
    """This rank's rows of an epoch's ``order`` ``(N,)``: slice ``rank`` of every global batch.

    Global batch ``k`` is ``order[k * B : (k + 1) * B]``; it is cut into ``world.size`` equal slices (a last,
    partial batch loses its remainder rows, at most ``size - 1``). Taken in batches of ``B / size``, the result
    gives rank ``r`` its slice of every global batch, in order.

    Returns:
        ``(M,)`` row indices, ``M`` the same on every rank.
    """
    if world.size == 1:
        return order
    per = batch_size // world.size
    parts = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        share = min(per, len(batch) // world.size)
        parts.append(batch[world.rank * share : (world.rank + 1) * share])
    return torch.cat(parts) if parts else order[:0]


def wrap(model: torch.nn.Module, device: torch.device, world: World) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` with synchronised batch norm; ``model`` itself for one process.

    The batch-norm layers are swapped in place (same parameters and buffers), so ``model`` itself trains with
    them and saves the same ``state_dict``; in evaluation mode they are plain batch norm (rank 0 validates alone).
    """
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index or 0])
    from medclass.training.syncbn import CpuSyncBatchNorm

    return DistributedDataParallel(CpuSyncBatchNorm.convert(model))


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (a small picklable object)."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(world: World) -> None:
    """Leave the process group (after the last collective).

    A barrier first: no rank destroys its gloo pairs while another still has a collective in flight (that aborts the
    process with ``terminate called without an active exception``).
    """
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def refuse_unsupported(cfg: Any, world: World) -> None:
    """Options the distributed loop does not support, as one-line errors."""
    if world.size == 1:
        return
    if cfg.train.ensemble > 1:
        raise ConfigError("train.ensemble: a deep ensemble trains its members one after another; run it in one process")
    if cfg.semi.method != "none":
        raise ConfigError("semi.method: semi-supervised training runs in one process (no --nproc / torchrun yet)")
    if cfg.model.name.lower().startswith("classical/"):
        raise ConfigError(f"{cfg.model.name}: classical models train in one process")


def launch(argv: list[str], nproc: int) -> int:
    """Run ``medclass <argv>`` as ``nproc`` processes on this machine through ``torchrun``; its exit status.

    Each process gets ``OMP_NUM_THREADS`` = cores / ``nproc`` unless set. A process that fails ends the job
    (torchrun stops the others).

    Raises:
        MedclassError: The job failed: one line naming the exit status and how to resume.
    """
    if nproc < 2:
        raise ConfigError(f"--nproc {nproc}: give 2 or more processes (1 is the plain command)")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or nproc) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "medclass", *argv]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    status = subprocess.run(cmd, env=env, check=False).returncode
    if status != 0:
        raise MedclassError(
            f"distributed training failed: a process exited and torchrun stopped the job (exit status {status}); "
            "the run folder keeps the last completed epoch: add --resume to continue, with any --nproc"
        )
    return 0
