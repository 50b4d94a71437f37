"""Worker of test_guard's DDP case: a run whose relu heatmaps are dead on every rank, under torchrun.

Usage: torchrun --nproc_per_node N ddp_guard_worker.py DATA_DIR RUN_DIR

Each rank writes ``RUN_DIR/stopped_rank<r>.txt`` with the guard's message when ``fit`` raises
``DeadHeatmapsError`` (and nothing otherwise), then exits 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from posematch.engine import dist
from posematch.engine.guard import DeadHeatmapsError
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings
from posematch.engine.trainer import fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.test_guard import relu_model
from tests.engine.tiny import synthetic_set


def main(data_dir: str, run_dir: str) -> None:
    device = dist.init()
    settings = TrainerSettings(
        epochs=3, batch_size=2, num_workers=0, dead_guard=0.5, dead_guard_patience=3
    )
    try:
        fit(relu_model(-1.0), SinkhornMatchingLoss(), synthetic_set(Path(data_dir)),
            OptimizerSettings(torch.optim.Adam, lr=1e-3), settings, RunFolder(run_dir),
            device)  # fmt: skip
    except DeadHeatmapsError as err:
        Path(run_dir, f"stopped_rank{dist.rank()}.txt").write_text(str(err))
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
