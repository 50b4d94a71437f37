"""What ``posematch.engine.trainer.fit`` is told: the loop's options, where the run lives, and how
it validates. Plain frozen values (``TrainerSettings`` is built by Hydra from ``conf/trainer/``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posematch.types import Codec, EvaluationSet, Evaluator

AMP_MODES = ("none", "bf16", "fp16")


def default_workers(most: int = 4) -> int:
    """Loader workers for a machine: the cores this process may use, at most ``most`` (more
    workers than cores only slow the training and make torch warn every epoch)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


@dataclass
class TrainerSettings:
    """Options of ``fit``.

    epochs: epochs to train. batch_size: samples per process per step. num_workers: loader workers
    per process; None: as many as the process may use cores, at most 4 (``default_workers``). amp: ``none``, ``bf16`` or ``fp16`` (fp16 uses a grad scaler; the matching loss
    computes in float32 regardless). grad_clip: max gradient norm, or None. val_every: validate
    every this many epochs (and after the last). monitor: metric that picks ``best.pth`` (higher is
    better), one the evaluator reports; None: the evaluator's primary metric (``AP`` for COCO,
    ``Mean`` for MPII). seed: seeds model init, shuffling and augmentation.
    warmup_iters / warmup_ratio: linear learning-rate warm-up from ``ratio`` x lr over the first
    ``warmup_iters`` steps (torch's ``LinearLR``, ``posematch.engine.optim.warmup``). sync_bn: convert
    BatchNorm to SyncBatchNorm under DDP. log_every: steps between TensorBoard loss points.
    max_steps_per_epoch: cap on steps (smoke runs); None = the whole epoch.
    max_val_instances: validate on the first this many instances of the val split, completed to
        whole images, and score those images only (smoke runs; ``posematch-train`` applies it);
        None = the whole split.
    dead_guard / dead_guard_patience: for a loss that normalises relu heatmaps (the matching loss),
    stop with ``DeadHeatmapsError`` once the share of dead heatmaps (no positive value) on the
    training batches stays above ``dead_guard`` for ``dead_guard_patience`` steps after the warm-up
    (``posematch.engine.guard``); ``dead_guard: null`` switches it off. Other losses ignore both.
    """

    epochs: int = 210
    batch_size: int = 32
    num_workers: int = field(default_factory=lambda: default_workers())  # null in a config, too
    amp: str = "none"
    grad_clip: float | None = None
    val_every: int = 10
    monitor: str | None = None
    seed: int = 0
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    sync_bn: bool = False
    log_every: int = 50
    max_steps_per_epoch: int | None = None
    max_val_instances: int | None = None
    dead_guard: float | None = 0.5
    dead_guard_patience: int = 100

    def __post_init__(self) -> None:
        if self.num_workers is None:
            self.num_workers = default_workers()
        # Hydra hands over whatever the command line said (trainer.epochs=abc, =2.5): name it.
        ints = ("epochs", "batch_size", "val_every", "log_every", "num_workers", "seed")
        for name in (*ints, "warmup_iters", "max_steps_per_epoch", "max_val_instances"):
            value = getattr(self, name)
            if value is None and name in ("max_steps_per_epoch", "max_val_instances"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"trainer.{name}={value!r}: expected an integer")
        if isinstance(self.dead_guard_patience, bool) or not isinstance(
            self.dead_guard_patience, int
        ):
            raise ValueError(
                f"trainer.dead_guard_patience={self.dead_guard_patience!r}: expected an integer"
            )
        if self.dead_guard is not None and (
            isinstance(self.dead_guard, bool)
            or not isinstance(self.dead_guard, int | float)
            or not 0 <= self.dead_guard < 1
        ):
            raise ValueError(
                f"trainer.dead_guard={self.dead_guard!r}: a share in [0, 1) of dead heatmaps, "
                "or null (off)"
            )
        if self.dead_guard_patience < 1:
            raise ValueError(
                f"trainer.dead_guard_patience={self.dead_guard_patience}: must be at least 1"
            )
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
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise ValueError(f"trainer.monitor={self.monitor!r}: a metric name, or null")
        if not isinstance(self.sync_bn, bool):
            raise ValueError(f"trainer.sync_bn={self.sync_bn!r}: expected true or false")
        if self.amp not in AMP_MODES:
            raise ValueError(f"trainer.amp={self.amp!r}: expected one of {AMP_MODES}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"trainer.grad_clip={self.grad_clip}: must be positive or null")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("trainer.max_steps_per_epoch: must be at least 1 or null")
        if self.max_val_instances is not None and self.max_val_instances < 1:
            raise ValueError(
                f"trainer.max_val_instances={self.max_val_instances}: must be at least 1 or null"
            )


@dataclass(frozen=True)
class RunFolder:
    """Where a run keeps its files and what it starts from.

    path: the run directory (``last.pth``, ``best.pth``, ``metrics.jsonl``, TensorBoard).
    resume: None (fresh), ``"auto"`` (``path/last.pth`` when present) or a checkpoint path.
    describe: plain values saying what the model is (the resolved ``model``, ``codec`` and ``data``
        configs), stored as ``config`` in ``last.pth`` and ``best.pth`` (then ``{"model": weights,
        "config": ...}``) so that a checkpoint alone can be used; None keeps ``best.pth`` a bare
        state dict.
    """

    path: Path
    resume: str | None = None
    describe: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class Validation:
    """What a split is scored with: ``evaluator`` scores ``dataset``'s predictions, decoded by
    ``codec`` (during training every ``TrainerSettings.val_every`` epochs; ``posematch-eval``).

    flip_perm: the joint permutation of the flip test (``KeypointSpec.flip_permutation()``), or
        None for no flip test. shift: the official 1 px shift of the flipped heatmaps. Both come
        from the ``test`` config group, which evaluation and inference read too.
    """

    dataset: EvaluationSet
    codec: Codec
    evaluator: Evaluator
    flip_perm: Sequence[int] | None = None
    shift: bool = True
