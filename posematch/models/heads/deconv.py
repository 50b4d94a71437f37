"""SimpleBaseline head (Xiao et al., ECCV 2018): transposed convs up to stride 4, then a 1x1 conv.

Names follow the official ``pose_resnet.py``: ``deconv_layers.{0,3,6}`` (ConvTranspose2d, no bias),
``deconv_layers.{1,4,7}`` (BatchNorm2d), ``final_layer`` (Conv2d with bias). Initialisation is the
official one: deconv weights normal(std=0.001), BN 1/0, final conv normal(std=0.001) and bias 0.
"""

from __future__ import annotations

import torch
from torch import nn

from posematch.models.heads.conv1x1 import output_activation
from posematch.models.init import init_official_

# (padding, output_padding) that make a stride-2 transposed conv exactly double the size.
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class DeconvHead(nn.Module):
    """Features (B, in_channels, h, w) -> heatmaps (B, num_keypoints, h * 2**num_deconv, ...).

    Args:
        in_channels: channels of the backbone output (2048 for ResNet-50+, 512 for ResNet-18/34).
        num_keypoints: heatmap channels K (17 for COCO, 16 for MPII).
        num_deconv: stride-2 transposed convs (3 takes a stride-32 backbone to stride 4).
        deconv_channels: channels of every transposed conv.
        deconv_kernel: 4 (official), 3 or 2.
        final_kernel: 1 (official) or 3.
        activation: ``"none"`` (official: raw conv output) or ``"softplus"`` (positive heatmaps,
            as ``Conv1x1Head``'s: the matching loss's relu never sees a value <= 0).
        softplus_beta: the softplus's sharpness (``conv1x1.output_activation``).
    """

    def __init__(
        self,
        in_channels: int = 2048,
        num_keypoints: int = 17,
        num_deconv: int = 3,
        deconv_channels: int = 256,
        deconv_kernel: int = 4,
        final_kernel: int = 1,
        activation: str = "none",
        softplus_beta: float = 1.0,
    ) -> None:
        super().__init__()
        activation_module = output_activation(activation, softplus_beta)
        if deconv_kernel not in _DECONV_PADDING:
            raise ValueError(f"deconv_kernel={deconv_kernel}: expected one of (4, 3, 2)")
        if final_kernel not in (1, 3):
            raise ValueError(f"final_kernel={final_kernel}: expected 1 or 3")
        padding, output_padding = _DECONV_PADDING[deconv_kernel]
        layers: list[nn.Module] = []
        for i in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(
                    in_channels if i == 0 else deconv_channels,
                    deconv_channels,
                    deconv_kernel,
                    stride=2,
                    padding=padding,
                    output_padding=output_padding,
                    bias=False,
                ),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
        self.deconv_layers = nn.Sequential(*layers)
        head_in = deconv_channels if num_deconv else in_channels
        self.final_layer = nn.Conv2d(head_in, num_keypoints, final_kernel, 1, final_kernel // 2)
        init_official_(self)
        self.activation = activation_module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(self.final_layer(self.deconv_layers(features)))
