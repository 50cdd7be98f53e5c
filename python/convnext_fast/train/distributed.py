"""torch.distributed plumbing for ``torchrun``: one process per device, gloo on CPU, NCCL on GPU.

Without ``WORLD_SIZE`` > 1 in the environment everything here is a no-op, so the same trainer code runs
single-process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when this context initialised the process group (and must tear it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU if there is one, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {requested}: no CUDA device is available")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    if requested != "cpu":
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {requested!r}")
    return torch.device("cpu")


def local_rank_from_env() -> int:
    """This process's index on its machine (0 outside torchrun): which GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: torch.device) -> DistContext:
    """Join the process group that ``torchrun`` describes through its environment variables."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank_from_env(), owns_group=owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (every process gets the same result, so decisions agree)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
