"""The expected-distance loss: the matching loss's suppliers without the optimal transport.

For each joint the suppliers are the same as the matching loss's, S = relu(H) / sum(relu(H)) over
the pixel centres (x=j, y=i); the loss is the mean distance of that mass from the ground-truth dot,
sum_i S_i |x_i - dot| (Euclidean, in heatmap pixels times ``pixel_size``). It answers "does the
optimal transport matter?": with one demander at the dot, the transport plan from S to
it is S itself and <C, P> equals this loss; the matching loss differs by its sub-pixel demanders
(four pixel centres around the dot) and its entropic regularisation.
"""

from __future__ import annotations

import torch
from torch import nn

from posematch.losses.suppliers import suppliers_from_heatmaps
from posematch.types import LossOutput

REDUCTIONS = ("none", "sum", "batchmean")


class ExpectedDistanceLoss(nn.Module):
    """``forward(heatmaps (B, K, h, w), keypoints (B, K, 2) heatmap px, weights (B, K))``: the
    weighted expected distance summed over joints, mean over the batch (``batchmean``), in heatmap
    pixels times ``pixel_size``. ``dead_grad`` as the matching loss's (0 = the paper's relu)."""

    target_kind = "dots"
    normalises_relu = True  # the same suppliers: dead heatmaps have no gradient

    def __init__(
        self, pixel_size: float = 1.0, reduction: str = "batchmean", dead_grad: float = 0.0
    ) -> None:
        super().__init__()
        if not pixel_size > 0:
            raise ValueError(f"pixel_size={pixel_size!r}: must be positive")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}")
        if not 0 <= dead_grad <= 1:
            raise ValueError(f"dead_grad={dead_grad!r}: the surrogate slope must be in [0, 1]")
        self.pixel_size = float(pixel_size)
        self.reduction = reduction
        self.dead_grad = float(dead_grad)

    def forward(
        self, heatmaps: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.with_stats(heatmaps, keypoints, weights).value

    def with_stats(
        self, heatmaps: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None
    ) -> LossOutput:
        """The loss and no statistics."""
        bsz, k, h, w = heatmaps.shape
        dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=heatmaps.device.type, enabled=False):
            heatmaps = heatmaps.to(dtype)
            weights = torch.ones(bsz, k, dtype=dtype, device=heatmaps.device) if weights is None \
                else weights.to(dtype)  # fmt: skip
            used = weights != 0
            dots = torch.where(used.unsqueeze(-1), keypoints.to(dtype), 0.0).detach()
            supply = suppliers_from_heatmaps(heatmaps, self.dead_grad)  # (B, K, h*w)
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=dtype, device=heatmaps.device),
                torch.arange(w, dtype=dtype, device=heatmaps.device),
                indexing="ij",
            )
            dx = xs.reshape(1, 1, -1) - dots[..., :1]
            dy = ys.reshape(1, 1, -1) - dots[..., 1:]
            distance = torch.sqrt(dx * dx + dy * dy)  # (B, K, h*w)
            value = (supply * distance).sum(-1) * weights * self.pixel_size
            value = torch.where(used, value, 0.0)
        if self.reduction == "sum":
            value = value.sum()
        elif self.reduction == "batchmean":
            value = value.sum() / bsz
        return LossOutput(value, {})
