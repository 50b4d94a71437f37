"""HRNet / HRFormer head: one conv from the stride-4 features to the heatmaps.

Named ``final_layer`` like the official ``pose_hrnet.py``; initialised normal(std=0.001), bias 0.
"""

from __future__ import annotations

import torch
from torch import nn


class Conv1x1Head(nn.Module):
    """Features (B, in_channels, h, w) -> heatmaps (B, num_keypoints, h, w).

    Args:
        in_channels: channels of the backbone output (the HRNet width: 32 for W32, 48 for W48).
        num_keypoints: heatmap channels K (17 for COCO, 16 for MPII).
        kernel_size: 1 (official FINAL_CONV_KERNEL) or 3.
    """

    def __init__(
        self, in_channels: int = 32, num_keypoints: int = 17, kernel_size: int = 1
    ) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size={kernel_size}: expected 1 or 3")
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, kernel_size, 1, kernel_size // 2)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.final_layer(features)
