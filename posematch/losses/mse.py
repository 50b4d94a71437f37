"""Gaussian-heatmap MSE loss of SimpleBaseline / HRNet (official ``JointsMSELoss``).

loss = 1/K * sum_k 0.5 * mean_{b, pixels} (w_bk * (pred_bk - target_bk))^2, which is
0.5 * mean over (B, K, h, w) of the weighted squared error. Computed in float32 under autocast.
"""

from __future__ import annotations

import torch
from torch import nn

from posematch.types import LossOutput


class JointsMSELoss(nn.Module):
    """Weighted heatmap MSE with the official 0.5 factor.

    Args:
        use_target_weight: multiply prediction and target by the joint weight (official default).

    ``forward(heatmaps (B, K, h, w), targets (B, K, h, w), weights (B, K))`` returns a scalar in
    squared heatmap units; ``with_stats`` returns it with no statistics.
    """

    target_kind = "heatmaps"  # consumes GaussianHeatmapCodec targets

    def __init__(self, use_target_weight: bool = True) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(
        self,
        heatmaps: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if heatmaps.shape != targets.shape or heatmaps.dim() != 4:
            raise ValueError(
                f"heatmaps {tuple(heatmaps.shape)} and targets {tuple(targets.shape)}: "
                "expected the same (B, K, h, w) shape"
            )
        with torch.autocast(device_type=heatmaps.device.type, enabled=False):
            diff = heatmaps.float() - targets.float()
            if self.use_target_weight:
                if weights is None:
                    raise ValueError("weights: required when use_target_weight=True")
                diff = diff * weights.float()[..., None, None]
            return 0.5 * diff.pow(2).mean()

    def with_stats(
        self,
        heatmaps: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossOutput:
        """The loss; MSE measures nothing else."""
        return LossOutput(self(heatmaps, targets, weights))
