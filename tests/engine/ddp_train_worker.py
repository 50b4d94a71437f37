"""Worker of test_ddp_training: trains the tiny model under torchrun with a fixed global batch.

Usage: torchrun --nproc_per_node N ddp_train_worker.py DATA_DIR RUN_DIR GLOBAL_BATCH [DIE_RANK]

With DIE_RANK, that rank kills itself (``os._exit``, no clean-up, like an OOM kill) at its second
training step, while the others are inside the step's gradient all-reduce.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from posematch.engine import dist
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings
from posematch.engine.trainer import fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.tiny import synthetic_set, tiny_model


class DyingLoss(SinkhornMatchingLoss):
    """The matching loss, except that rank ``die_rank`` exits abruptly at its second call."""

    def __init__(self, die_rank: int) -> None:
        super().__init__()
        self.die_rank, self.calls = die_rank, 0

    def with_stats(self, *args):
        self.calls += 1
        if self.calls == 2 and dist.rank() == self.die_rank:
            os._exit(3)
        return super().with_stats(*args)


def main(data_dir: str, run_dir: str, global_batch: int, die_rank: int | None = None) -> None:
    device = dist.init()
    per_rank = global_batch // dist.world_size()
    settings = TrainerSettings(epochs=2, batch_size=per_rank, num_workers=0, seed=5)
    loss = SinkhornMatchingLoss() if die_rank is None else DyingLoss(die_rank)
    fit(tiny_model(), loss, synthetic_set(Path(data_dir)),
        OptimizerSettings(torch.optim.SGD, lr=0.05), settings, RunFolder(run_dir), device)  # fmt: skip
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *(int(a) for a in sys.argv[4:5]))
