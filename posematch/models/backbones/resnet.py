"""ResNet backbone of SimpleBaseline (Xiao et al., *Simple Baselines for Human Pose Estimation and
Tracking*, ECCV 2018), built from timm's model registry.

The network is timm's ``resnet{depth}`` (torchvision layout, stride on the 3x3 conv of Bottleneck
like the official ``pose_resnet.py``) without its pooling and classifier. Its children are kept under
their own names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so the keys match the official
SimpleBaseline checkpoints and torchvision/timm ImageNet files up to a prefix.
"""

from __future__ import annotations

from typing import cast

import timm
import torch
from torch import nn

DEPTHS = (18, 34, 50, 101, 152)


class ResNet(nn.Module):
    """ResNet-``depth`` trunk: images (B, 3, H, W) -> features (B, C, H/32, W/32).

    Args:
        depth: 18, 34, 50, 101 or 152; C is 512 (18, 34) or 2048 (50+), see ``out_channels``.

    ImageNet weights (torchvision ``resnet50-*.pth`` or timm files, ``fc`` ignored) are loaded from a
    local file by ``TopDownModel(pretrained=...)``; nothing is ever downloaded.
    """

    def __init__(self, depth: int = 50) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth={depth}: expected one of {DEPTHS}")
        # zero_init_last=False: BN gammas 1 like torchvision/the official code, not timm's default.
        net = timm.create_model(
            f"resnet{depth}", pretrained=False, num_classes=0, global_pool="", zero_init_last=False
        )
        # create_model returns an nn.Module: mypy reads its attributes as Tensor | Module.
        self.out_channels = cast(int, net.num_features)
        self.conv1 = cast(nn.Module, net.conv1)
        self.bn1 = cast(nn.Module, net.bn1)
        self.act1 = cast(nn.Module, net.act1)
        self.maxpool = cast(nn.Module, net.maxpool)
        self.layer1 = cast(nn.Module, net.layer1)
        self.layer2 = cast(nn.Module, net.layer2)
        self.layer3 = cast(nn.Module, net.layer3)
        self.layer4 = cast(nn.Module, net.layer4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
