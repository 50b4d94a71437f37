"""Everything torch.distributed in one place: start-up, rank helpers, sharding and gathering.

Runs the same under ``torchrun`` (single or multi node: RANK, WORLD_SIZE, LOCAL_RANK in the
environment) and as one plain process. NCCL on CUDA, gloo on CPU.

Evaluation shards a dataset with ``ShardSampler`` (rank r takes indices r, r + W, r + 2W, ...), so no
instance is duplicated or dropped whatever the dataset size, and ``gather_to_main`` collects the
per-rank results on rank 0 in dataset order. (DistributedSampler pads the last batch with repeats,
which would change the metrics.)
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init(backend: str | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else gloo.
        timeout_s: collective timeout; a rank that dies makes the others fail after it rather than
            hang forever.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        dist.init_process_group(
            backend=backend or ("nccl" if cuda else "gloo"),
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if cuda else None,
        )
    return device


def shutdown() -> None:
    """Leave the process group together: a rank that tears gloo down while another is still
    finishing (closing its logs) can abort at exit ("terminate called without an active
    exception")."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (every rank gets the total); itself in one process."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum over the ranks, in place; itself in one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... of ``range(length)``: every index on exactly one rank."""

    def __init__(self, length: int, rank_: int | None = None, world: int | None = None) -> None:
        self.length = length
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def gather_to_main(items: list[Any]) -> list[Any] | None:
    """Concatenate every rank's list on rank 0 (``None`` elsewhere); a plain copy in one process."""
    if not is_distributed():
        return list(items)
    gathered: list[list[Any]] | None = [None] * world_size() if is_main() else None  # type: ignore[list-item]
    dist.gather_object(items, gathered, dst=0)
    if not is_main():
        return None
    return [item for part in gathered for item in part]  # type: ignore[union-attr]


def broadcast_object(obj: Any) -> Any:
    """rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
