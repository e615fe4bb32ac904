"""Data-parallel training under ``torchrun``: the process group, each rank's device, the
wrapped model and the mean of a value over ranks (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["global_mean", "join_process_group", "local_device", "wrap"]


def local_device(device: str) -> torch.device:
    """``device``, with ``"cuda"`` meaning ``cuda:LOCAL_RANK`` (made current) under torchrun, so
    that every rank of a machine trains on its own GPU."""
    local_rank = os.environ.get("LOCAL_RANK")
    out = torch.device(device)
    if out.type == "cuda" and out.index is None and local_rank is not None:
        out = torch.device("cuda", int(local_rank))
    if out.type == "cuda" and out.index is not None:
        torch.cuda.set_device(out)
    return out


def join_process_group(device: str) -> tuple[int, int]:
    """``(world size, rank)``; joins the process group when started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def wrap(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there is more than one rank and something
    to train, else as it is."""
    if world == 1 or not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def global_mean(local: Tensor, world: int) -> list[float]:
    """``local`` averaged over ranks (each rank's share is already scaled), as floats."""
    if world > 1:
        local = local.clone()
        dist.all_reduce(local)
        local /= world
    return local.tolist()
