"""The dead-heatmap guard: stop a training whose heatmaps have died, instead of training on.

A loss that normalises relu(H) (the matching loss: suppliers relu(H) / sum relu(H)) gets no
gradient from a heatmap with no positive value, so once most of a run's heatmaps are dead it cannot
recover, and nothing else shows it until the next validation (AP 0). The guard measures, on every
training batch, the share of labelled joints whose heatmap has no positive value (``dead_share``,
averaged over ranks), puts it in the loss's statistics (the epoch record's ``dead_share``), and
raises ``DeadHeatmapsError`` once the share has stayed above ``threshold`` for ``patience``
consecutive steps after the warm-up.
"""

from __future__ import annotations

import torch

from posematch.engine import dist
from posematch.types import Loss, LossOutput

# What results/relu.md measured: the loss drives relu maps down, so a smaller lr or a longer
# warm-up only delays the death; a positive slope everywhere stops it, an anchor on each map's mass
# keeps most maps alive.
REMEDIES = (
    "model.head.activation=softplus (positive heatmaps, nothing can die; the demo's recipe), or "
    "keep the relu suppliers and anchor each map's mass from the first step, without warm-up (a "
    "warm-up's small steps let maps die before the anchor holds them, and a dead map stays dead): "
    "loss.mass_weight=0.1 loss.mass_target=100 trainer.warmup_iters=0, measured on 32x24 maps; "
    "the maps then live but stay broad (results/relu.md); a lower lr only delays it; "
    "trainer.dead_guard=null trains on regardless"
)


class DeadHeatmapsError(RuntimeError):
    """Training stopped: most heatmaps have no positive value (see the message)."""


def dead_share(heatmaps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """() float tensor: the share of joints with weight > 0 whose heatmap (B, K, h, w) has no
    value > 0 (0 when no joint is labelled)."""
    dead = heatmaps.detach().flatten(2).amax(2) <= 0
    used = weights.detach() > 0
    return (dead & used).sum().float() / used.sum().clamp_min(1).float()


class DeadHeatmapGuard:
    """A ``Loss`` that computes ``loss`` and watches its heatmaps (module docstring).

    Args:
        loss: the training loss (its value and statistics pass through unchanged).
        threshold: the dead share, in [0, 1], above which a step counts as dying.
        patience: consecutive dying steps, after ``warmup_steps``, that stop the run.
        warmup_steps: global steps during which the guard measures but never stops (the lr is still
            ramping up; maps may start at or near zero).
        start_step: the global step the run starts (or resumes) at.
    """

    def __init__(
        self,
        loss: Loss,
        threshold: float,
        patience: int,
        warmup_steps: int = 0,
        start_step: int = 0,
    ) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"trainer.dead_guard={threshold}: a share in [0, 1), or null (off)")
        if patience < 1:
            raise ValueError(f"trainer.dead_guard_patience={patience}: must be at least 1")
        self.loss = loss
        self.target_kind = loss.target_kind
        self.threshold = float(threshold)
        self.patience = int(patience)
        self.warmup_steps = int(warmup_steps)
        self.step = int(start_step)
        self.dying_since: int | None = None  # first step of the current dying streak

    def __call__(
        self, heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.with_stats(heatmaps, target, weights).value

    def with_stats(
        self, heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> LossOutput:
        out = self.loss.with_stats(heatmaps, target, weights)
        if weights is None:
            weights = torch.ones(heatmaps.shape[:2], device=heatmaps.device)
        share = dead_share(heatmaps, weights)
        # Every rank decides on the same number: the mean over the ranks.
        share = dist.all_reduce_sum(share) / dist.world_size()
        value = float(share)
        self.step += 1
        self._watch(value)
        return LossOutput(out.value, {**out.stats, "dead_share": value})

    def _watch(self, share: float) -> None:
        if share <= self.threshold:
            self.dying_since = None
            return
        if self.dying_since is None:
            self.dying_since = self.step
        counted = self.step - max(self.dying_since, self.warmup_steps + 1) + 1
        if counted >= self.patience:
            raise DeadHeatmapsError(
                f"the heatmaps died: {share:.0%} of the labelled joints' heatmaps have no positive "
                f"value at step {self.step}, above trainer.dead_guard={self.threshold:g} since "
                f"step {self.dying_since} ({counted} steps after the warm-up). The loss normalises "
                f"relu(heatmap), which has no gradient there: the run cannot recover. "
                f"Remedies: {REMEDIES}"
            )
