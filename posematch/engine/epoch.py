"""One training epoch: the run's progress, the objects a step uses, and the epoch loop over the
training loader (optimizer steps, warm-up steps, step-level logging, the stop flag)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, LRScheduler
from torch.utils.data import DataLoader

from posematch.engine import checkpoint, dist
from posematch.engine.loaders import ResumableSampler
from posematch.engine.logging import RunLogger
from posematch.engine.settings import TrainerSettings
from posematch.engine.signals import StopFlag
from posematch.types import Loss, TrainingSet

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Progress:
    """Where a run stands, as ``last.pth`` keeps it: finished ``epoch``s, optimizer ``step``s, the
    ``best`` monitored value, the per-epoch mean losses (``history``) and, mid-epoch, the
    unfinished epoch's position and running sums (``partial``: ``batch``, ``total``,
    ``stats_sum``)."""

    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    history: list[float] = field(default_factory=list)
    partial: dict[str, Any] | None = None


@dataclass
class Machinery:
    """What a training step uses: the model (``wrapped`` in DDP under torchrun, else the model
    itself), the loss (behind the dead-heatmap guard where it applies), the optimizer, the
    per-epoch scheduler, the per-step warm-up and the fp16 grad scaler."""

    model: nn.Module
    wrapped: nn.Module
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    warmup: LinearLR | None
    scaler: torch.amp.GradScaler | None

    def state(self, progress: Progress, config: dict[str, Any] | None) -> dict[str, Any]:
        """The resume state (``last.pth``); ``config``: what the model is (``RunFolder.describe``;
        the key is left out when None)."""
        return {
            **({"config": config} if config is not None else {}),
            "model": checkpoint.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": progress.epoch,
            "step": progress.step,
            "best": progress.best,
            "history": progress.history,
            "partial": progress.partial,
            "rng": checkpoint.rng_state(),
        }


@dataclass(frozen=True)
class EpochEnd:
    """A finished epoch: the mean loss over all ranks and the record's other entries (the lr of
    the last step, the loss's statistics averaged over the steps)."""

    loss: float
    extra: dict[str, float]


@dataclass(frozen=True)
class Stopped:
    """An epoch stopped by a signal after ``batch`` steps: its running sums and the signal."""

    batch: int
    total: torch.Tensor
    stats_sum: dict[str, float]
    signum: int


def train_one_epoch(
    m: Machinery,
    loader: DataLoader,
    settings: TrainerSettings,
    device: torch.device,
    logger: RunLogger,
    progress: Progress,
    flag: StopFlag | None = None,
) -> EpochEnd | Stopped:
    """Epoch ``progress.epoch`` (continued from ``progress.partial`` when set); ``progress.step``
    counts the optimizer steps. Returns the finished epoch, or, when ``flag`` caught a signal, where
    it stopped (after the current step). The warm-up steps after each optimizer step until its
    ``total_iters``."""
    epoch = progress.epoch
    m.wrapped.train()
    sampler = cast(ResumableSampler, loader.sampler)  # a loader of train_loader
    sampler.set_epoch(epoch)
    cast(TrainingSet, loader.dataset).set_epoch(epoch)
    amp_dtype = AMP_DTYPES[settings.amp]
    start, total, stats_sum = _running_sums(progress.partial, device)
    sampler.skip = start * settings.batch_size
    steps = sampler.epoch_length // settings.batch_size  # drop_last; whole epoch
    if settings.max_steps_per_epoch is not None:
        steps = min(steps, settings.max_steps_per_epoch)
    later = steps * (settings.epochs - epoch - 1)  # the run's ETA counts the epochs to come
    bar = logger.progress(steps - start, f"epoch {epoch + 1}", later)
    for i, batch in enumerate(loader, start=start):
        if i >= steps:
            break
        images = batch.image.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        weight = batch.target_weight.to(device, non_blocking=True)
        loss, stats, heatmaps = _step(m, settings, device, amp_dtype, images, target, weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {i}: stopping"
            )
        total += torch.stack([loss.detach().double(), torch.ones((), device=device).double()])
        for key, value in stats.items():
            stats_sum[key] = stats_sum.get(key, 0.0) + value
        progress.step += 1
        _log_step(logger, bar, loss.item(), m.optimizer.param_groups[0]["lr"], stats, progress)
        signum = flag.agreed(device) if flag is not None else 0
        if signum and i + 1 < steps:  # after the last step the epoch ends normally
            bar.close()
            dist.all_reduce_sum(total)  # every rank stops after this same step
            return Stopped(i + 1, total.cpu(), stats_sum, signum)
    bar.close()
    if steps:
        logger.heatmaps(epoch + 1, images[0], heatmaps[0], target[0], weight[0])
    dist.all_reduce_sum(total)
    mean_loss = (total[0] / total[1].clamp_min(1)).item()
    extra = {"lr": m.optimizer.param_groups[0]["lr"]}  # of the epoch's last step
    extra.update({key: value / max(steps, 1) for key, value in stats_sum.items()})
    return EpochEnd(mean_loss, extra)


def _running_sums(
    partial: dict[str, Any] | None, device: torch.device
) -> tuple[int, torch.Tensor, dict[str, float]]:
    """Where the epoch starts (its first batch), its (loss sum, batches) total and the loss's
    statistics summed so far: zeros, or the mid-epoch state of a preempted run. The saved total is
    summed over ranks (the epoch's all-reduce adds the ranks up), so one rank carries it."""
    total = torch.zeros(2, dtype=torch.float64, device=device)
    if partial is None:
        return 0, total, {}
    if dist.is_main():
        total = partial["total"].to(device=device, dtype=total.dtype)
    return partial["batch"], total, dict(partial["stats_sum"])


def _log_step(
    logger: RunLogger,
    bar: Any,
    loss: float,
    lr: float,
    stats: Mapping[str, float],
    progress: Progress,
) -> None:
    """The progress line, and the step-level scalars under step/ (apart from the epoch records'
    train/* and val/*)."""
    bar.update(loss, lr)
    logger.scalar("step/loss", loss, progress.step)
    logger.scalar("step/lr", lr, progress.step)
    if "dead_share" in stats:
        logger.scalar("step/dead_share", stats["dead_share"], progress.step)


def _step(
    m: Machinery,
    settings: TrainerSettings,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    images: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, Mapping[str, float], torch.Tensor]:
    """One optimizer step (and warm-up step); the loss, its statistics and the heatmaps. A
    non-finite loss is returned before any update (the caller stops on it)."""
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        heatmaps = m.wrapped(images)
    out = m.loss_fn.with_stats(heatmaps, target, weight)
    loss = out.value
    if not torch.isfinite(loss):
        return loss, out.stats, heatmaps
    m.optimizer.zero_grad(set_to_none=True)
    if m.scaler is not None:
        m.scaler.scale(loss).backward()
        m.scaler.unscale_(m.optimizer)
    else:
        loss.backward()
    if settings.grad_clip is not None:
        nn.utils.clip_grad_norm_(m.wrapped.parameters(), settings.grad_clip)
    if m.scaler is not None:
        m.scaler.step(m.optimizer)
        m.scaler.update()
    else:
        m.optimizer.step()
    if m.warmup is not None and m.warmup.last_epoch < m.warmup.total_iters:
        m.warmup.step()
    return loss, out.stats, heatmaps
