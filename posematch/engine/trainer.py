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
import warnings
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LinearLR, LRScheduler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from posematch.data.topdown import TopDownDataset
from posematch.engine import checkpoint, dist
from posematch.engine.evaluate import evaluate
from posematch.engine.guard import DeadHeatmapGuard
from posematch.engine.logging import RunLogger
from posematch.engine.optim import OptimizerSettings, warmup
from posematch.engine.settings import RunFolder, TrainerSettings, Validation
from posematch.engine.signals import Preempted, StopFlag, ignore_stop_signals
from posematch.types import Batch, Loss

log = logging.getLogger("posematch.train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class _ResumableSampler(torch.utils.data.Sampler[int]):
    """A ``DistributedSampler`` whose next epoch can start ``skip`` samples in (a mid-epoch resume):
    the batches that follow are those the uninterrupted epoch would have drawn."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.skip = 0

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
    (measured: ``posematch-train`` printed its non-finite-loss error and never exited). Torch has
    no public call for this; its iterator's own shutdown is idempotent."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def train_loader(dataset: Dataset, settings: TrainerSettings, device: torch.device) -> DataLoader:
    """Shuffled by (seed, epoch) identically on every rank; each rank takes its share."""
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset,
        num_replicas=dist.world_size(),
        rank=dist.rank(),
        shuffle=True,
        seed=settings.seed,
        drop_last=True,
    )
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=_ResumableSampler(sampler),
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=settings.num_workers > 0,
        worker_init_fn=ignore_stop_signals,  # a SIGTERM to the group must reach the trainer only
        collate_fn=Batch.collate,
    )


def train_one_epoch(
    model: nn.Module,
    loss_fn: Loss,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    settings: TrainerSettings,
    device: torch.device,
    epoch: int,
    step: int,
    logger: RunLogger,
    flag: StopFlag | None = None,
    partial: dict[str, Any] | None = None,
    warmup: LinearLR | None = None,
) -> tuple[float, int, dict[str, float]] | dict[str, Any]:
    """One epoch; returns the mean loss over all ranks, the new global step and extra stats; or,
    when ``flag`` caught a signal, the epoch's partial state (``batch``, ``total``, ``stats_sum``,
    ``step``, ``signum``) after the current step. ``partial``: such a state to continue from.
    ``warmup``: a per-step scheduler (``posematch.engine.optim.warmup``), stepped after each
    optimizer step until its ``total_iters``."""
    model.train()
    # A loader of train_loader: its sampler and dataset.
    sampler = cast(_ResumableSampler, loader.sampler)
    sampler.set_epoch(epoch)
    cast(TopDownDataset, loader.dataset).set_epoch(epoch)
    amp_dtype = AMP_DTYPES[settings.amp]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, batches
    stats_sum: dict[str, float] = {}  # the loss's statistics, summed over this rank's steps
    start = 0
    steps = len(sampler.sampler) // settings.batch_size  # drop_last; whole epoch
    if partial is not None:
        start, stats_sum = partial["batch"], dict(partial.get("stats_sum") or {})
        if "iters_sum" in partial:  # a mid-epoch checkpoint written before stats_sum existed
            stats_sum["sinkhorn_iters"] = float(partial["iters_sum"])
        # The saved total is summed over ranks (below); one rank carries it so that the epoch's
        # all-reduce counts it once.
        if dist.is_main():
            total = partial["total"].to(device=device, dtype=total.dtype)
        sampler.skip = start * settings.batch_size
    if settings.max_steps_per_epoch is not None:
        steps = min(steps, settings.max_steps_per_epoch)
    later = steps * (settings.epochs - epoch - 1)  # the run's ETA counts the epochs to come
    progress = logger.progress(steps - start, f"epoch {epoch + 1}", later)
    for i, batch in enumerate(loader, start=start):
        if i >= steps:
            break
        images = batch.image.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        weight = batch.target_weight.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            heatmaps = model(images)
        out = loss_fn.with_stats(heatmaps, target, weight)
        loss = out.value
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {i}: stopping"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if warmup is not None and warmup.last_epoch < warmup.total_iters:
            warmup.step()
        total += torch.stack([loss.detach().double(), torch.ones((), device=device).double()])
        for key, value in out.stats.items():
            stats_sum[key] = stats_sum.get(key, 0.0) + value
        step += 1
        lr = optimizer.param_groups[0]["lr"]
        progress.update(loss.item(), lr)
        # Step-level scalars under step/, apart from the epoch records' train/* and val/*.
        logger.scalar("step/loss", loss.item(), step)
        logger.scalar("step/lr", lr, step)
        if "dead_share" in out.stats:
            logger.scalar("step/dead_share", out.stats["dead_share"], step)
        signum = flag.agreed(device) if flag is not None else 0
        if signum and i + 1 < steps:  # after the last step the epoch ends normally
            progress.close()
            if dist.is_distributed():  # every rank stops after this same step: a safe collective
                torch.distributed.all_reduce(total)
            return {"batch": i + 1, "total": total.cpu(), "stats_sum": stats_sum, "step": step,
                    "signum": signum}  # fmt: skip
    progress.close()
    if steps:
        logger.heatmaps(epoch + 1, images[0], heatmaps[0], target[0], weight[0])
    if dist.is_distributed():
        torch.distributed.all_reduce(total)
    mean_loss = (total[0] / total[1].clamp_min(1)).item()
    extra = {"lr": optimizer.param_groups[0]["lr"]}  # of the epoch's last step
    extra.update({key: value / max(steps, 1) for key, value in stats_sum.items()})
    return mean_loss, step, extra


def _state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedulers: dict[str, LRScheduler | None],
    scaler: torch.amp.GradScaler | None,
    progress: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The resume state. ``schedulers``: ``scheduler`` (per epoch) and ``warmup`` (per step), each
    saved as its state dict or None. ``progress``: ``epoch`` (finished epochs), ``step``, ``best``,
    ``history`` and ``partial`` (the unfinished epoch's position and running sums, None at an epoch
    boundary). ``config``: what the model is (``RunFolder.describe``; the key is left out when
    None)."""
    return {
        **({"config": config} if config is not None else {}),
        "model": checkpoint.unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        **{k: v.state_dict() if v is not None else None for k, v in schedulers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "partial": None,
        **progress,
        "rng": checkpoint.rng_state(),
    }


def run_header(
    model: nn.Module,
    train_set: Dataset,
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
        f"training on {device} x{processes}: {len(cast(Sized, train_set))} train samples, {val}; "
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
    train_set: Dataset,
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
        train_set: yields ``posematch.types.Sample``s.
        optim: the optimizer over the model's parameters (no-decay groups, lr scaled to the global
            batch) and its per-epoch schedule (``posematch.engine.optim``).
        settings: the loop's options, warm-up included.
        run: the run folder, what to resume from and what the model is.
        validation: what to validate with, or None for no validation.
    """
    run_dir = run.path
    monitor = monitored_metric(settings.monitor, validation)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: cuDNN picks its fastest kernels
    model = model.to(device)
    if dist.is_distributed() and settings.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = optim.build(model, settings.batch_size * dist.world_size())
    # Per-epoch scheduler first, then the per-step warm-up, then any resume state (see ``warmup``).
    scheduler = optim.schedule(optimizer) if optim.schedule is not None else None
    warmup_sched = warmup(optimizer, settings.warmup_iters, settings.warmup_ratio)
    use_scaler = settings.amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    start_epoch, step, best = 0, 0, -math.inf
    history: list[float] = []
    partial: dict[str, Any] | None = None

    resume_path = _resume_path(run.resume, run_dir)
    if resume_path is not None:
        state = checkpoint.load_resume_state(resume_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = state["epoch"], state["step"], state["best"]
        if warmup_sched is not None:
            _resume_warmup(warmup_sched, state, step)
        history = list(state["history"])
        partial = state.get("partial")
        checkpoint.set_rng_state(state["rng"])
        where = f", batch {partial['batch']}" if partial else ""
        log.info("resumed from %s at epoch %d%s", resume_path, start_epoch, where)
    schedulers = {"scheduler": scheduler, "warmup": warmup_sched}
    if settings.dead_guard is not None and getattr(loss_fn, "normalises_relu", False):
        loss_fn = DeadHeatmapGuard(
            loss_fn,
            settings.dead_guard,
            settings.dead_guard_patience,
            warmup_steps=settings.warmup_iters,
            start_step=step,
        )

    wrapped: nn.Module = model
    if dist.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    loader = train_loader(train_set, settings, device)
    # Joint names and channel order label the heatmap panel; other datasets get plain labels.
    pipeline = train_set.pipeline if isinstance(train_set, TopDownDataset) else None
    logger = RunLogger(
        run_dir,
        enabled=dist.is_main(),
        log_every=settings.log_every,
        joint_names=pipeline.spec.names if pipeline is not None else None,
        rgb=pipeline is None or pipeline.color == "rgb",
    )
    # A run killed after logging an epoch but before its checkpoint redoes that epoch: one line each.
    logger.keep_epochs(start_epoch)
    if dist.is_main():
        log.info(
            "%s", run_header(model, train_set, loader, optimizer, settings, device, validation)
        )
    flag = StopFlag().__enter__()
    try:
        for epoch in range(start_epoch, settings.epochs):
            result = train_one_epoch(
                wrapped, loss_fn, loader, optimizer, scaler, settings, device, epoch, step, logger,
                flag, partial, warmup_sched,
            )  # fmt: skip
            partial = None
            if isinstance(result, dict):  # a signal: save where we are and stop
                path = run_dir / "last.pth"
                if dist.is_main():
                    part = {k: result[k] for k in ("batch", "total", "stats_sum")}
                    progress = {"epoch": epoch, "step": result["step"], "best": best,
                                "history": history, "partial": part}  # fmt: skip
                    state = _state(model, optimizer, schedulers, scaler, progress, run.describe)
                    checkpoint.atomic_save(state, path)
                    log.warning("saved %s at epoch %d, batch %d", path, epoch + 1, result["batch"])
                dist.barrier()
                raise Preempted(result["signum"], path)
            loss, step, extra = result
            history.append(loss)
            if scheduler is not None:
                scheduler.step()
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss, **extra}
            # Records skipped under skip_bad so far (malformed or unreadable, each counted once);
            # under DDP each rank counts those its own shards drew.
            skipped = train_set.skipped() if isinstance(train_set, TopDownDataset) else 0
            if skipped:
                log.warning("epoch %d: %d records skipped so far", epoch + 1, skipped)
                record["skipped"] = skipped
            last = epoch + 1 == settings.epochs
            if validation is not None and ((epoch + 1) % settings.val_every == 0 or last):
                # The record also gets val/dead_share, val/top_mass, val/window_mass: the health
                # of the non-flipped validation heatmaps, so a dying run shows while it happens.
                metrics = evaluate(
                    model, validation.dataset, validation.codec, validation.evaluator, device,
                    settings.batch_size, settings.num_workers, validation.flip_perm,
                    validation.shift, heatmap_health=True,
                )  # fmt: skip
                metrics = dist.broadcast_object(metrics)
                record.update({f"val/{k}": v for k, v in metrics.items() if k != "scored"})
                value = metrics.get(monitor)
                if value is not None and value > best:
                    best = float(value)
                    if dist.is_main():
                        weights = checkpoint.unwrap(model).state_dict()
                        best_file = weights if run.describe is None else {
                            "model": weights, "config": run.describe}  # fmt: skip
                        checkpoint.atomic_save(best_file, run_dir / "best.pth")
            if dist.is_main():
                logger.epoch(record)
                progress = {"epoch": epoch + 1, "step": step, "best": best, "history": history}
                state = _state(model, optimizer, schedulers, scaler, progress, run.describe)
                checkpoint.atomic_save(state, run_dir / "last.pth")
            dist.barrier()
    finally:
        flag.__exit__(None, None, None)
        logger.close()
        stop_workers(loader)
    return {
        "epochs": settings.epochs,
        "final_loss": history[-1] if history else None,
        "history": history,
        "best": best if best > -math.inf else None,
        "run_dir": str(run_dir),
    }


def _resume_warmup(warmup_sched: LinearLR, state: dict[str, Any], step: int) -> None:
    """The warm-up's position from a resume state. A checkpoint from before the warm-up was a torch
    scheduler holds the un-warmed rate and no ``warmup`` entry: replay the warm-up's ``step``
    steps on that rate (the same factors as the old hand-written warm-up)."""
    if state.get("warmup") is not None:
        warmup_sched.load_state_dict(state["warmup"])
        return
    for group in warmup_sched.optimizer.param_groups:
        group["lr"] *= warmup_sched.start_factor
    warmup_sched.last_epoch = 0
    with warnings.catch_warnings():  # torch warns of scheduler steps before optimizer steps
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(step, warmup_sched.total_iters)):
            warmup_sched.step()


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
