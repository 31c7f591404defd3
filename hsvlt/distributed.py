"""Process setup for one machine or many (torchrun): device, process group, CPU threads."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hsvlt.machine import usable_cores


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its device, and its rank among the processes of a torchrun job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def configure_cpu(processes_on_this_machine: int = 1) -> None:
    """Flush denormals (weights that become denormal late in training make the CPU's arithmetic several times
    slower) and share the cores among the processes of this machine."""
    torch.set_flush_denormal(True)
    torch.set_num_threads(max(1, usable_cores() // processes_on_this_machine))


def setup(device: str = "auto") -> Placement:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group:
    NCCL on GPUs, gloo on CPUs. Without torchrun, a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    placement = Placement(resolve_device(device, local_rank), rank, world_size, local_rank)
    configure_cpu(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if placement.device.type == "cuda":
        torch.cuda.set_device(placement.device)
    if placement.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if placement.device.type == "cuda" else "gloo")
    return placement


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(value, placement: Placement) -> list:
    """Every rank's `value`, in rank order (just [value] in a single process)."""
    if not placement.distributed:
        return [value]
    gathered = [None] * placement.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def any_rank(flag: bool, placement: Placement) -> bool:
    """Whether `flag` is true on any rank (every rank gets the same answer, so all take the same branch)."""
    if not placement.distributed:
        return flag
    box = torch.tensor([float(flag)], device=placement.device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def broadcast_object(value, placement: Placement):
    """Rank 0's `value` on every rank."""
    if not placement.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
