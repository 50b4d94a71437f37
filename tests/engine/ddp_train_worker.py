"""Worker of test_ddp_training: trains the tiny model under torchrun with a fixed global batch.

Usage: torchrun --nproc_per_node N ddp_train_worker.py DATA_DIR RUN_DIR GLOBAL_BATCH
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

from posematch.engine import dist
from posematch.engine.trainer import TrainerSettings, fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.tiny import synthetic_set, tiny_model


def main(data_dir: str, run_dir: str, global_batch: int) -> None:
    device = dist.init()
    per_rank = global_batch // dist.world_size()
    settings = TrainerSettings(epochs=2, batch_size=per_rank, num_workers=0, seed=5)
    fit(tiny_model(), SinkhornMatchingLoss(), synthetic_set(Path(data_dir)),
        partial(torch.optim.SGD, lr=0.05), settings, run_dir, device)  # fmt: skip
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
