"""The engine's DataLoaders: the training loader (shuffled by seed and epoch, sharded over the
ranks, resumable mid-epoch) and loaders whose worker processes end with the iteration, error or not.

Left to the iterator's garbage collection, an error leaves the workers running: the traceback
(which Hydra keeps to print) holds the iterator, and at interpreter exit multiprocessing waits for
workers that are blocked on a full queue (``posematch-eval`` would print a ``BadRecordError`` for
an unreadable image and never exit). Torch has no public call to stop them; this module is
the one place that reaches into its loader iterator for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from posematch.engine import dist
from posematch.engine.settings import TrainerSettings
from posematch.engine.signals import ignore_stop_signals
from posematch.types import Batch, TrainingSet


@contextmanager
def batches(loader: DataLoader) -> Iterator[Iterator[Batch]]:
    """``with batches(loader) as it: for batch in it: ...``; on leaving, the loader's workers (if
    any) are stopped at once. Torch has no public call for this; the iterator's own shutdown is
    idempotent and a no-op without workers."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class ResumableSampler(torch.utils.data.Sampler[int]):
    """A ``DistributedSampler`` whose next epoch can start ``skip`` samples in (a mid-epoch resume):
    the batches that follow are those the uninterrupted epoch would have drawn."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.skip = 0

    @property
    def epoch_length(self) -> int:
        """Samples of this rank in a whole epoch (``skip`` not taken off)."""
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)[self.skip :]
        self.skip = 0  # once: later epochs are whole
        return iter(indices)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def stop_workers(loader: DataLoader) -> None:
    """Stop the loader's persistent worker processes now. The loader keeps its iterator, and on an
    error the traceback keeps the loader: left to interpreter exit, the workers' shutdown hung
    (``posematch-train`` would print its non-finite-loss error and never exit). Torch has
    no public call for this; its iterator's own shutdown is idempotent."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def train_loader(
    dataset: TrainingSet, settings: TrainerSettings, device: torch.device
) -> DataLoader:
    """Shuffled by (seed, epoch) identically on every rank; each rank takes its share."""
    sampler: DistributedSampler[int] = DistributedSampler(
        cast(Dataset, dataset),
        num_replicas=dist.world_size(),
        rank=dist.rank(),
        shuffle=True,
        seed=settings.seed,
        drop_last=True,
    )
    return DataLoader(
        cast(Dataset, dataset),
        batch_size=settings.batch_size,
        sampler=ResumableSampler(sampler),
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=settings.num_workers > 0,
        worker_init_fn=ignore_stop_signals,  # a SIGTERM to the group must reach the trainer only
        collate_fn=Batch.collate,
    )
