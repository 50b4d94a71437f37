"""The training loop: plain functions over already-built objects (no hooks, no Hydra).

``fit`` trains epoch by epoch with the official recipe's pieces given to it (optimizer, per-epoch
scheduler), on CPU or CUDA, in one process or under torchrun (DistributedDataParallel; the global
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
(``posematch.engine.workers``).
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from posematch.data.topdown import TopDownDataset
from posematch.engine import checkpoint, dist
from posematch.engine.evaluate import evaluate
from posematch.engine.logging import RunLogger
from posematch.engine.optim import OptimizerSettings
from posematch.engine.workers import ignore_stop_signals
from posematch.types import Batch, Codec, Evaluator, Loss

log = logging.getLogger("posematch.train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after writing a mid-epoch ``last.pth``; ``exit_code`` is
    ``128 + signal`` (143 SIGTERM, 130 SIGINT)."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by signal {signum}: resume from {checkpoint} with resume=auto")
        self.signum = signum
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint


class _SignalFlag:
    """Records SIGTERM / SIGINT instead of dying mid-step; the old handlers come back on exit."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalFlag:
        import threading

        if threading.current_thread() is threading.main_thread():  # signals reach only the main one
            for sig in PREEMPT_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        log.warning("signal %d: finishing the current step, then saving last.pth", signum)
        self.signum = signum

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self, device: torch.device) -> int:
        """The signal to stop on, the same on every rank (the largest any rank received)."""
        if not dist.is_distributed():
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


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


@dataclass
class TrainerSettings:
    """Options of ``fit``.

    epochs: epochs to train. batch_size: samples per process per step. num_workers: loader workers
    per process. amp: ``none``, ``bf16`` or ``fp16`` (fp16 uses a grad scaler; the matching loss
    computes in float32 regardless). grad_clip: max gradient norm, or None. val_every: validate
    every this many epochs (and after the last). monitor: metric that picks ``best.pth`` (higher is
    better: ``AP`` for COCO, ``Mean`` for MPII). seed: seeds model init, shuffling and augmentation.
    warmup_iters / warmup_ratio: linear learning-rate warm-up from ``ratio`` x lr. sync_bn: convert
    BatchNorm to SyncBatchNorm under DDP. flip_test / shift_heatmap: validation flip test.
    max_steps_per_epoch: cap on steps (smoke runs); None = the whole epoch.
    """

    epochs: int = 210
    batch_size: int = 32
    num_workers: int = 4
    amp: str = "none"
    grad_clip: float | None = None
    val_every: int = 10
    monitor: str = "AP"
    seed: int = 0
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    sync_bn: bool = False
    flip_test: bool = True
    shift_heatmap: bool = True
    log_every: int = 50
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        # Hydra hands over whatever the command line said (trainer.epochs=abc, =2.5): name it.
        ints = ("epochs", "batch_size", "val_every", "log_every", "num_workers", "seed")
        for name in (*ints, "warmup_iters", "max_steps_per_epoch"):
            value = getattr(self, name)
            if value is None and name == "max_steps_per_epoch":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"trainer.{name}={value!r}: expected an integer")
        for name in ("warmup_ratio", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"trainer.{name}={value!r}: expected a number")
        for name in ("epochs", "batch_size", "val_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name}={getattr(self, name)}: must be at least 1")
        if self.num_workers < 0:
            raise ValueError(f"trainer.num_workers={self.num_workers}: must be >= 0")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"trainer.amp={self.amp!r}: expected one of {tuple(AMP_DTYPES)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"trainer.grad_clip={self.grad_clip}: must be positive or null")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("trainer.max_steps_per_epoch: must be at least 1 or null")


def train_loader(dataset: Dataset, settings: TrainerSettings, device: torch.device) -> DataLoader:
    """Shuffled by (seed, epoch) identically on every rank; each rank takes its share."""
    sampler = DistributedSampler(
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


def _warmup_factor(step: int, settings: TrainerSettings) -> float:
    if step >= settings.warmup_iters:
        return 1.0
    alpha = step / settings.warmup_iters
    return settings.warmup_ratio * (1 - alpha) + alpha


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
    flag: _SignalFlag | None = None,
    partial: dict[str, Any] | None = None,
) -> tuple[float, int, dict[str, float]] | dict[str, Any]:
    """One epoch; returns the mean loss over all ranks, the new global step and extra stats; or,
    when ``flag`` caught a signal, the epoch's partial state (``batch``, ``total``, ``stats_sum``,
    ``step``, ``signum``) after the current step. ``partial``: such a state to continue from."""
    model.train()
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    amp_dtype = AMP_DTYPES[settings.amp]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, batches
    stats_sum: dict[str, float] = {}  # the loss's statistics, summed over this rank's steps
    start = 0
    steps = len(loader.sampler.sampler) // settings.batch_size  # drop_last; whole epoch
    if partial is not None:
        start, stats_sum = partial["batch"], dict(partial.get("stats_sum") or {})
        if "iters_sum" in partial:  # a mid-epoch checkpoint written before stats_sum existed
            stats_sum["sinkhorn_iters"] = float(partial["iters_sum"])
        # The saved total is summed over ranks (below); one rank carries it so that the epoch's
        # all-reduce counts it once.
        if dist.is_main():
            total = partial["total"].to(device=device, dtype=total.dtype)
        loader.sampler.skip = start * settings.batch_size
    if settings.max_steps_per_epoch is not None:
        steps = min(steps, settings.max_steps_per_epoch)
    progress = logger.progress(steps, f"epoch {epoch + 1}")
    # The scheduler's lr for this epoch; warm-up scales it and hands it back unchanged, so that a
    # per-epoch scheduler (MultiStepLR multiplies the lr it finds) never sees a warm-up value.
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for i, batch in enumerate(loader, start=start):
        if i >= steps:
            break
        if step < settings.warmup_iters:
            factor = _warmup_factor(step, settings)
            for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr * factor
        elif settings.warmup_iters and step == settings.warmup_iters:
            for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr
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
        total += torch.stack([loss.detach().double(), torch.ones((), device=device).double()])
        for key, value in out.stats.items():
            stats_sum[key] = stats_sum.get(key, 0.0) + value
        step += 1
        progress.update(loss.item())
        logger.scalar("train/loss_step", loss.item(), step)
        signum = flag.agreed(device) if flag is not None else 0
        if signum and i + 1 < steps:  # after the last step the epoch ends normally
            progress.close()
            if dist.is_distributed():  # every rank stops after this same step: a safe collective
                torch.distributed.all_reduce(total)
            for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr
            return {"batch": i + 1, "total": total.cpu(), "stats_sum": stats_sum, "step": step,
                    "signum": signum}  # fmt: skip
    progress.close()
    for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
        group["lr"] = lr
    if steps:
        logger.heatmaps(epoch + 1, images[0], heatmaps[0], target[0], weight[0])
    if dist.is_distributed():
        torch.distributed.all_reduce(total)
    mean_loss = (total[0] / total[1].clamp_min(1)).item()
    extra = {"lr": optimizer.param_groups[0]["lr"]}
    extra.update({key: value / max(steps, 1) for key, value in stats_sum.items()})
    return mean_loss, step, extra


def _state(
    model, optimizer, scheduler, scaler, epoch, best, step, history, partial=None, config=None
) -> dict[str, Any]:
    """The resume state; ``epoch`` counts finished epochs, ``partial`` is the unfinished one's
    position and running sums (None at an epoch boundary), ``config`` what the model is (``fit``'s
    ``describe``; the key is left out when None)."""
    return {
        **({"config": config} if config is not None else {}),
        "partial": partial,
        "model": checkpoint.unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step": step,
        "best": best,
        "history": history,
        "rng": checkpoint.rng_state(),
    }


def fit(
    model: nn.Module,
    loss_fn: Loss,
    train_set: Dataset,
    optimizer_fn: OptimizerSettings | Callable[..., torch.optim.Optimizer],
    settings: TrainerSettings,
    run_dir: str | Path,
    device: torch.device,
    scheduler_fn: Callable[..., Any] | None = None,
    val_set: Dataset | None = None,
    codec: Codec | None = None,
    evaluator: Evaluator | None = None,
    flip_perm: Sequence[int] | None = None,
    resume: str | None = None,
    describe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` and return a summary (epochs, final loss, best metric, paths).

    Args:
        model: built on every rank from the same seed (so the replicas start equal).
        loss_fn: a ``posematch.types.Loss``: ``with_stats(heatmaps, target, target_weight)`` gives
            the scalar and its statistics (averaged per epoch into the record, e.g.
            ``sinkhorn_iters``).
        optimizer_fn: ``OptimizerSettings`` (parameter groups without decay, lr scaled to the
            global batch: ``posematch.engine.optim``), or a plain ``params -> optimizer`` callable
            (an optimizer class or partial), given ``model.parameters()``.
        scheduler_fn: ``optimizer -> per-epoch scheduler`` or None.
        val_set, codec, evaluator: validation (skipped when val_set is None).
        flip_perm: joint permutation for the validation flip test.
        resume: None (fresh), ``"auto"`` (``run_dir/last.pth`` when present) or a checkpoint path.
        describe: plain values saying what the model is (the resolved ``model``, ``codec`` and
            ``data`` configs), stored as ``config`` in ``last.pth`` and ``best.pth`` (then
            ``{"model": weights, "config": ...}``) so a checkpoint alone can be used; None keeps
            ``best.pth`` a bare state dict.
    """
    run_dir = Path(run_dir)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = (
            True  # fixed input sizes: let cuDNN pick its fastest kernels
        )
    model = model.to(device)
    if dist.is_distributed() and settings.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(optimizer_fn, OptimizerSettings):
        optimizer = optimizer_fn.build(model, settings.batch_size * dist.world_size())
    else:
        optimizer = optimizer_fn(model.parameters())
    scheduler = scheduler_fn(optimizer) if scheduler_fn is not None else None
    use_scaler = settings.amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    start_epoch, step, best = 0, 0, -math.inf
    history: list[float] = []
    partial: dict[str, Any] | None = None

    resume_path = _resume_path(resume, run_dir)
    if resume_path is not None:
        state = checkpoint.load_resume_state(resume_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = state["epoch"], state["step"], state["best"]
        history = list(state["history"])
        partial = state.get("partial")
        checkpoint.set_rng_state(state["rng"])
        where = f", batch {partial['batch']}" if partial else ""
        log.info("resumed from %s at epoch %d%s", resume_path, start_epoch, where)

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
    flag = _SignalFlag().__enter__()
    try:
        for epoch in range(start_epoch, settings.epochs):
            result = train_one_epoch(
                wrapped, loss_fn, loader, optimizer, scaler, settings, device, epoch, step, logger,
                flag, partial,
            )  # fmt: skip
            partial = None
            if isinstance(result, dict):  # a signal: save where we are and stop
                path = run_dir / "last.pth"
                if dist.is_main():
                    part = {k: result[k] for k in ("batch", "total", "stats_sum")}
                    state = _state(model, optimizer, scheduler, scaler, epoch, best,
                                   result["step"], history, part, describe)  # fmt: skip
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
            if val_set is not None and ((epoch + 1) % settings.val_every == 0 or last):
                # The record also gets val/dead_share, val/top_mass, val/window_mass: the health
                # of the non-flipped validation heatmaps, so a dying run shows while it happens.
                metrics = evaluate(
                    model, val_set, codec, evaluator, device, settings.batch_size,
                    settings.num_workers, flip_perm, settings.shift_heatmap, heatmap_health=True,
                )  # fmt: skip
                metrics = dist.broadcast_object(metrics)
                record.update({f"val/{k}": v for k, v in metrics.items() if k != "scored"})
                value = metrics.get(settings.monitor)
                if value is not None and value > best:
                    best = float(value)
                    if dist.is_main():
                        weights = checkpoint.unwrap(model).state_dict()
                        best_file = weights if describe is None else {"model": weights,
                                                                      "config": describe}  # fmt: skip
                        checkpoint.atomic_save(best_file, run_dir / "best.pth")
            if dist.is_main():
                logger.epoch(record)
                state = _state(
                    model, optimizer, scheduler, scaler, epoch + 1, best, step, history,
                    config=describe,
                )  # fmt: skip
                checkpoint.atomic_save(state, run_dir / "last.pth")
            dist.barrier()
    finally:
        flag.__exit__(None, None, None)
        logger.close()
    return {
        "epochs": settings.epochs,
        "final_loss": history[-1] if history else None,
        "history": history,
        "best": best if best > -math.inf else None,
        "run_dir": str(run_dir),
    }


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
