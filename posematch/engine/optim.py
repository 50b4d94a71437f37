"""The optimizer of a training run and its learning-rate schedule, in one place.

``OptimizerSettings.build(model, global_batch)`` hands the optimizer exactly the model's trainable
parameters, split into a weight-decay group and a no-decay group (parameter names containing one of
``no_decay``: HRFormer's relative-position bias tables), at the learning rate scaled linearly to the
global batch when ``base_batch`` is set (Goyal et al. 2017: lr x global batch / base batch).

The schedule is torch's: a per-epoch scheduler (``OptimizerSettings.schedule``, e.g. ``MultiStepLR``
at the official epochs) and, for a linear warm-up, a ``LinearLR`` stepped once per training step
(``warmup``), chained on the same optimizer as torchvision's detection references do: each
multiplies the learning rate it finds, so their factors compose.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, LRScheduler

log = logging.getLogger("posematch.train")


def param_groups(
    model: nn.Module,
    no_decay: Sequence[str],
    lr: float | None = None,
    lr_mult: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters, in model order, in groups: those whose name contains a
    ``no_decay`` key with ``weight_decay=0``, the others with the optimizer's own decay; and, for
    each ``lr_mult`` key (a name prefix, e.g. ``head.final_layer``), the parameters under it at
    ``lr`` x its factor (mmpose's ``paramwise_cfg.custom_keys``; the first matching key wins).
    Empty groups are left out; the first group is always the plain one."""
    mults = dict(lr_mult or {})
    groups: dict[tuple[bool, str | None], list[nn.Parameter]] = {(False, None): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = next((k for k in mults if name.startswith(k)), None)
        groups.setdefault((any(k in name for k in no_decay), key), []).append(p)
    out: list[dict[str, Any]] = []
    for (plain, key), params in groups.items():
        if not params and out:
            continue
        group: dict[str, Any] = {"params": params}
        if plain:
            group["weight_decay"] = 0.0
        if key is not None:
            if lr is None:
                raise ValueError("param_groups: lr_mult needs the base lr")
            group["lr"] = lr * mults[key]
        out.append(group)
    return out


def _check_schedule(schedule: object) -> None:
    """A scheduler partial's ``gamma`` (a positive factor: a negative one turns the lr negative,
    gradient ascent) and ``milestones`` (non-negative epochs) as the config gave them."""
    keywords = getattr(schedule, "keywords", None) or {}
    gamma = keywords.get("gamma")
    if gamma is not None and (
        isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma
    ):
        raise ValueError(f"schedule.gamma={gamma!r}: a positive factor on the lr")
    milestones = keywords.get("milestones")
    if milestones is not None and not all(
        isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones
    ):
        raise ValueError(f"schedule.milestones={list(milestones)!r}: epochs, integers >= 0")


@dataclass(frozen=True)
class OptimizerSettings:
    """How a run builds its optimizer.

    make: the optimizer class or a partial of it (Hydra ``_partial_``), called as
        ``make(param_groups, lr=...)``.
    lr: learning rate, for ``base_batch`` images per step when that is set (the config's
        ``optim.optimizer.lr``).
    no_decay: substrings of parameter names trained without weight decay.
    base_batch: global batch that ``lr`` was tuned for; None keeps ``lr`` at any batch.
    schedule: ``optimizer -> scheduler`` stepped once per epoch (a partial of a torch scheduler,
        the config's ``schedule`` group), or None for a constant rate.
    lr_mult: parameter-name prefix -> factor on the lr for the parameters under it (e.g.
        ``{head.final_layer: 0.01}``); schedules and warm-up scale every group alike.
    """

    make: Callable[..., torch.optim.Optimizer]
    lr: float
    no_decay: tuple[str, ...] = ()
    base_batch: int | None = None
    schedule: Callable[[torch.optim.Optimizer], LRScheduler] | None = None
    lr_mult: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _check_schedule(self.schedule)
        for key, factor in dict(self.lr_mult or {}).items():
            if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
                raise ValueError(f"optim.lr_mult.{key}={factor!r}: a positive factor on the lr")
        try:
            lr = float(self.lr)
        except (TypeError, ValueError) as err:
            raise ValueError(f"optim.optimizer.lr={self.lr!r}: not a number") from err
        if not (lr > 0 and math.isfinite(lr)):  # a run that never moves is not a result
            raise ValueError(f"optim.optimizer.lr={lr}: must be a positive finite number")
        if self.base_batch is not None and not (
            isinstance(self.base_batch, int) and self.base_batch > 0
        ):
            raise ValueError(f"optim.base_batch={self.base_batch!r}: a positive integer or null")
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "no_decay", tuple(self.no_decay))

    def lr_for(self, global_batch: int) -> float:
        """The learning rate at ``global_batch`` images per step (all ranks together)."""
        if self.base_batch is None:
            return self.lr
        return self.lr * global_batch / self.base_batch

    def build(self, model: nn.Module, global_batch: int) -> torch.optim.Optimizer:
        """The optimizer over ``model``'s trainable parameters (see ``param_groups``)."""
        lr = self.lr_for(global_batch)
        if lr != self.lr:
            log.info("lr scaled to %.3g for a global batch of %d", lr, global_batch)
        groups = param_groups(model, self.no_decay, lr, self.lr_mult)
        if self.lr_mult:
            unmatched = [k for k in self.lr_mult if not any(n.startswith(k) for n, _ in
                                                              model.named_parameters())]  # fmt: skip
            if unmatched:
                raise ValueError(f"optim.lr_mult: no parameter name starts with {unmatched}")
        return self.make(groups, lr=lr)


def warmup(optimizer: torch.optim.Optimizer, iters: int, ratio: float) -> LinearLR | None:
    """Linear warm-up from ``ratio`` x lr to lr over ``iters`` training steps, or None when
    ``iters`` is 0. Step it after each optimizer step until ``last_epoch`` reaches ``iters``.
    Build it after the per-epoch scheduler and before loading any resume state: building it scales
    the optimizer's current rate by ``ratio``."""
    if iters <= 0:
        return None
    return LinearLR(optimizer, start_factor=ratio, end_factor=1.0, total_iters=iters)
