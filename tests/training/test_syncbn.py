"""Batch norm synchronised over CPU ranks against plain batch norm on the whole batch, with two real processes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from medclass.training.syncbn import CpuSyncBatchNorm


def _reference(x: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    y = bn(x)
    (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()  # a loss that weighs every output differently
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var


def _rank(rank: int, store: str, x: torch.Tensor, state: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    bn = nn.BatchNorm2d(3)
    bn.load_state_dict(state)
    sync = CpuSyncBatchNorm.convert(nn.Sequential(bn))[0]
    half = x.shape[0] // 2
    mine = x[rank * half : (rank + 1) * half].clone().requires_grad_(True)
    y = sync(mine)
    weights = torch.arange(x.numel()).view_as(x).sin()[rank * half : (rank + 1) * half]
    (y * weights).sum().backward()
    torch.save(
        {"y": y.detach(), "gx": mine.grad, "gw": sync.weight.grad, "gb": sync.bias.grad,
         "rm": sync.running_mean, "rv": sync.running_var, "type": type(sync).__name__},
        f"{out}-{rank}.pt",
    )  # fmt: skip
    dist.destroy_process_group()


def test_two_ranks_normalise_and_differentiate_like_one_batch_norm_over_the_union(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 4) * 3 + 1
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    y, gx, gw, gb, rm, rv = _reference(x, bn)
    mp.start_processes(_rank, args=(str(tmp_path / "store"), x, state, str(tmp_path / "r")), nprocs=2,
                       start_method="spawn")  # fmt: skip
    parts = [torch.load(tmp_path / f"r-{r}.pt") for r in range(2)]
    assert {p["type"] for p in parts} == {"CpuSyncBatchNorm"}
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p["gx"] for p in parts]), gx, rtol=1e-4, atol=1e-5)
    # each rank's parameter gradient is its share; data-parallel training sums (then averages) them
    torch.testing.assert_close(parts[0]["gw"] + parts[1]["gw"], gw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(parts[0]["gb"] + parts[1]["gb"], gb, rtol=1e-4, atol=1e-5)
    for p in parts:  # every rank's running statistics are the one process's
        torch.testing.assert_close(p["rm"], rm)
        torch.testing.assert_close(p["rv"], rv)


def test_convert_keeps_the_tensors_and_keys_and_is_plain_batch_norm_in_one_process() -> None:
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU())
    keys = list(model.state_dict())
    weight = model[1].weight
    model = CpuSyncBatchNorm.convert(model)
    assert isinstance(model[1], CpuSyncBatchNorm) and model[1].weight is weight
    assert list(model.state_dict()) == keys
    reference = nn.BatchNorm3d(4)
    reference.load_state_dict(model[1].state_dict())
    x = torch.randn(2, 4, 3, 3, 3)
    torch.testing.assert_close(model[1](x), reference(x))  # no process group: plain batch norm
    model.eval()
    reference.eval()
    torch.testing.assert_close(model[1](x), reference(x))
