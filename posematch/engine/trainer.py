"""The training loop: plain functions over already-built objects (no hooks, no Hydra).

``fit`` trains epoch by epoch with the official recipe's pieces given to it (optimizer, per-epoch
scheduler and per-step warm-up: ``posematch.engine.optim``; the options: ``posematch.engine.settings``), on CPU or CUDA, in one process or under torchrun (DistributedDataParallel; the global
batch is ``batch_size`` x world size, and every rank sees its share of the same shuffled order, so
the run equals a one-process run of the same global batch). It validates every ``val_every`` epochs
through ``posematch.engine.evaluate`` (the metrics plus the health of the non-flipped validation
heatmaps: ``val/dead_share``, ``val/top_mass``, ``val/window_mass``), keeps ``last.pth`` every
epoch and ``best.pth`` by the monitored metric (atomic writes), appends ``metrics.jsonl``, logs to
TensorBoard, and stops on a non-finite loss. ``resume="auto"`` continues from ``last.pth`` with
model, optimizer, scheduler, grad scaler, epoch, best metric and RNG states, so an interrupted run
ends as if it had not stopped.

Preemption: SIGTERM or SIGINT during training lets the current step finish, then writes ``last.pth``
mid-epoch (the position in the epoch and its running loss sums besides the states above) and raises
``Preempted`` (the command exits with ``128 + signal``: 143 for SIGTERM, 130 for SIGINT, the shell's
convention). ``resume="auto"`` continues from that step: the epoch's remaining batches come from
the same shuffled order, and on CPU the finished run equals the uninterrupted one bit for bit. Under
torchrun every rank stops after the same step (the flag is all-reduced each step), the running loss
sums are all-reduced into the checkpoint, and a signal sent to the whole process group (torchrun's
agent, a terminal's Ctrl-C) reaches the ranks but not their loader workers
(``posematch.engine.signals``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sized
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from posematch.engine import checkpoint, dist
from posematch.engine.epoch import EpochEnd, Machinery, Progress, Stopped, train_one_epoch
from posematch.engine.evaluate import evaluate
from posematch.engine.guard import DeadHeatmapGuard
from posematch.engine.loaders import stop_workers, train_loader
from posematch.engine.logging import RunLogger
from posematch.engine.optim import OptimizerSettings, warmup
from posematch.engine.settings import RunFolder, TrainerSettings, Validation
from posematch.engine.signals import Preempted, StopFlag
from posematch.types import Loss, TrainingSet

log = logging.getLogger("posematch.train")


def run_header(
    model: nn.Module,
    train_set: TrainingSet,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    settings: TrainerSettings,
    device: torch.device,
    validation: Validation | None,
) -> str:
    """The training log's first line: device, data, model size, batch, lr and length."""
    params = sum(p.numel() for p in model.parameters())
    processes = dist.world_size()
    steps = len(loader)
    if settings.max_steps_per_epoch is not None:
        steps = min(steps, settings.max_steps_per_epoch)
    # Map-style datasets (torch's stubs leave __len__ out of Dataset).
    val = "no validation" if validation is None else f"{len(cast(Sized, validation.dataset))} val"
    # The configured lr: a scheduler keeps it as initial_lr while the warm-up lowers "lr".
    group = optimizer.param_groups[0]
    lr = f"lr {group.get('initial_lr', group['lr']):.3g}"
    if settings.warmup_iters > 0:
        lr += f" (warm-up x{settings.warmup_ratio:g} -> x1 over {settings.warmup_iters} steps)"
    return (
        f"training on {device} x{processes}: {len(train_set)} train samples, {val}; "
        f"{params:,} parameters; batch {settings.batch_size} x {processes} process(es) = "
        f"{settings.batch_size * processes}; {lr}; "
        f"{settings.epochs} epochs of {steps} steps; {settings.num_workers} loader workers"
    )


def monitored_metric(monitor: str | None, validation: Validation | None) -> str | None:
    """The metric that picks ``best.pth``: ``trainer.monitor``, or the evaluator's primary metric
    when it is null. ValueError at start, naming both, when the evaluator does not report it (the
    run would never write ``best.pth``, silently)."""
    if validation is None:
        return monitor
    evaluator = validation.evaluator
    if monitor is None:
        return evaluator.primary_metric
    if monitor not in evaluator.metric_names:
        raise ValueError(
            f"trainer.monitor={monitor}: {type(evaluator).__name__} reports "
            f"{', '.join(evaluator.metric_names)} (higher is better); trainer.monitor=null follows "
            f"its primary metric, {evaluator.primary_metric}"
        )
    return monitor


def fit(
    model: nn.Module,
    loss_fn: Loss,
    train_set: TrainingSet,
    optim: OptimizerSettings,
    settings: TrainerSettings,
    run: RunFolder,
    device: torch.device,
    validation: Validation | None = None,
) -> dict[str, Any]:
    """Train ``model`` and return a summary (epochs, final loss, best metric, paths).

    Args:
        model: built on every rank from the same seed (so the replicas start equal).
        loss_fn: a ``posematch.types.Loss``: ``with_stats(heatmaps, target, target_weight)`` gives
            the scalar and its statistics (averaged per epoch into the record, e.g.
            ``sinkhorn_iters``).
        train_set: a ``posematch.types.TrainingSet`` of ``Sample``s.
        optim: the optimizer over the model's parameters (no-decay groups, lr scaled to the global
            batch) and its per-epoch schedule (``posematch.engine.optim``).
        settings: the loop's options, warm-up included.
        run: the run folder, what to resume from and what the model is.
        validation: what to validate with, or None for no validation.
    """
    monitor = monitored_metric(settings.monitor, validation)
    m = _machinery(model, loss_fn, optim, settings, device)
    progress = _resume(m, run, device)
    _guard_and_replicate(m, settings, progress, device)
    loader = train_loader(train_set, settings, device)
    logger = RunLogger(
        run.path,
        enabled=dist.is_main(),
        log_every=settings.log_every,
        joint_names=train_set.joint_names,
        rgb=train_set.channels == "rgb",
    )
    # A run killed after logging an epoch but before its checkpoint redoes that epoch: one line each.
    logger.keep_epochs(progress.epoch)
    if dist.is_main():
        log.info(
            "%s", run_header(m.model, train_set, loader, m.optimizer, settings, device, validation)
        )
    flag = StopFlag().__enter__()
    try:
        while progress.epoch < settings.epochs:
            result = train_one_epoch(m, loader, settings, device, logger, progress, flag)
            progress.partial = None
            if isinstance(result, Stopped):
                _save_stopped(m, run, progress, result)
            record = _end_epoch(m, result, train_set, progress)
            if validation is not None and (
                progress.epoch % settings.val_every == 0 or progress.epoch == settings.epochs
            ):
                record.update(_validate(m, validation, settings, device, monitor, progress, run))
            if dist.is_main():
                logger.epoch(record)
                checkpoint.atomic_save(m.state(progress, run.describe), run.path / "last.pth")
            dist.barrier()
    finally:
        flag.__exit__(None, None, None)
        logger.close()
        stop_workers(loader)
    return {
        "epochs": settings.epochs,
        "final_loss": progress.history[-1] if progress.history else None,
        "history": progress.history,
        "best": progress.best if progress.best > -math.inf else None,
        "run_dir": str(run.path),
    }


def _machinery(
    model: nn.Module,
    loss_fn: Loss,
    optim: OptimizerSettings,
    settings: TrainerSettings,
    device: torch.device,
) -> Machinery:
    """The model on its device (SyncBatchNorm under DDP when asked), the optimizer, the per-epoch
    scheduler, then the per-step warm-up (that order: see ``warmup``), and the fp16 grad scaler."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: cuDNN picks its fastest kernels
    model = model.to(device)
    if dist.is_distributed() and settings.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = optim.build(model, settings.batch_size * dist.world_size())
    scheduler = optim.schedule(optimizer) if optim.schedule is not None else None
    warmup_sched = warmup(optimizer, settings.warmup_iters, settings.warmup_ratio)
    use_scaler = settings.amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    return Machinery(model, model, loss_fn, optimizer, scheduler, warmup_sched, scaler)


def _resume(m: Machinery, run: RunFolder, device: torch.device) -> Progress:
    """Load the resume state into ``m`` (model, optimizer, schedulers, scaler, RNG) when the run
    resumes; the progress it holds, else a fresh start."""
    path = _resume_path(run.resume, run.path)
    if path is None:
        return Progress()
    state = checkpoint.load_resume_state(path, map_location=device)
    m.model.load_state_dict(state["model"])
    m.optimizer.load_state_dict(state["optimizer"])
    if m.scheduler is not None and state["scheduler"] is not None:
        m.scheduler.load_state_dict(state["scheduler"])
    if m.scaler is not None and state["scaler"] is not None:
        m.scaler.load_state_dict(state["scaler"])
    if (m.warmup is None) != (state["warmup"] is None):
        # LinearLR scales the rate it finds: starting one on a loaded rate (or dropping one
        # mid-ramp) would leave the lr off by up to 1 / warmup_ratio for the rest of the run.
        had = "without a warm-up" if state["warmup"] is None else "with a warm-up"
        raise ValueError(
            f"resume={path}: that run was trained {had}; resume it with the same "
            "trainer.warmup_iters, or start anew"
        )
    if m.warmup is not None:
        m.warmup.load_state_dict(state["warmup"])
    progress = Progress(
        state["epoch"], state["step"], state["best"], list(state["history"]), state.get("partial")
    )
    checkpoint.set_rng_state(state["rng"])
    where = f", batch {progress.partial['batch']}" if progress.partial else ""
    log.info("resumed from %s at epoch %d%s", path, progress.epoch, where)
    return progress


def _guard_and_replicate(
    m: Machinery, settings: TrainerSettings, progress: Progress, device: torch.device
) -> None:
    """Put the dead-heatmap guard around a loss that normalises relu heatmaps (when on), and the
    model in DistributedDataParallel under torchrun (after the resume: DDP starts every replica
    from rank 0's weights)."""
    if settings.dead_guard is not None and getattr(m.loss_fn, "normalises_relu", False):
        m.loss_fn = DeadHeatmapGuard(
            m.loss_fn,
            settings.dead_guard,
            settings.dead_guard_patience,
            warmup_steps=settings.warmup_iters,
            start_step=progress.step,
        )
    if dist.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        m.wrapped = DistributedDataParallel(m.model, device_ids=ids)


def _save_stopped(m: Machinery, run: RunFolder, progress: Progress, stopped: Stopped) -> NoReturn:
    """A signal stopped the epoch: save where it stands in ``last.pth`` and raise ``Preempted``."""
    path = run.path / "last.pth"
    if dist.is_main():
        progress.partial = {
            "batch": stopped.batch,
            "total": stopped.total,
            "stats_sum": stopped.stats_sum,
        }
        checkpoint.atomic_save(m.state(progress, run.describe), path)
        log.warning("saved %s at epoch %d, batch %d", path, progress.epoch + 1, stopped.batch)
    dist.barrier()
    raise Preempted(stopped.signum, path)


def _end_epoch(
    m: Machinery, result: EpochEnd, train_set: TrainingSet, progress: Progress
) -> dict[str, Any]:
    """Count the finished epoch in ``progress``, step the per-epoch scheduler; its record."""
    progress.history.append(result.loss)
    progress.epoch += 1
    if m.scheduler is not None:
        m.scheduler.step()
    record: dict[str, Any] = {"epoch": progress.epoch, "train_loss": result.loss, **result.extra}
    # Records skipped under skip_bad so far (malformed or unreadable, each counted once); under
    # DDP each rank counts those its own shards drew.
    skipped = train_set.skipped()
    if skipped:
        log.warning("epoch %d: %d records skipped so far", progress.epoch, skipped)
        record["skipped"] = skipped
    return record


def _validate(
    m: Machinery,
    validation: Validation,
    settings: TrainerSettings,
    device: torch.device,
    monitor: str | None,
    progress: Progress,
    run: RunFolder,
) -> dict[str, Any]:
    """Validate; write ``best.pth`` when the monitored metric beats ``progress.best``. The metrics
    as ``val/*`` record entries, with ``val/dead_share``, ``val/top_mass`` and
    ``val/window_mass``: the health of the non-flipped validation heatmaps."""
    metrics = evaluate(
        m.model, validation, device, settings.batch_size, settings.num_workers, heatmap_health=True
    )
    metrics = dist.broadcast_object(metrics)
    value = metrics.get(monitor)
    if value is not None and value > progress.best:
        progress.best = float(value)
        if dist.is_main():
            weights = checkpoint.unwrap(m.model).state_dict()
            best = weights if run.describe is None else {"model": weights, "config": run.describe}
            checkpoint.atomic_save(best, run.path / "best.pth")
    return {f"val/{k}": v for k, v in metrics.items() if k != "scored"}


def _resume_path(resume: str | None, run_dir: Path) -> Path | None:
    if resume is None or resume in ("", "none", "false"):
        return None
    if resume == "auto":
        path = run_dir / "last.pth"
        return path if path.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: checkpoint not found")
    return path
