"""Top-down pose model: a backbone and a heatmap head, nothing else (no loss, no decoder)."""

from __future__ import annotations

import torch
from torch import nn

from posematch.models.checkpoints import load_pretrained_backbone


class TopDownModel(nn.Module):
    """Images (B, 3, H, W), normalised crops -> heatmaps (B, K, H/4, W/4), raw (no activation).

    Args:
        backbone: images -> features (``ResNet``, ``HRNet``, ...).
        head: features -> heatmaps (``DeconvHead``, ``Conv1x1Head``).
        pretrained: optional local ImageNet checkpoint loaded into the backbone only (the head keeps
            its official initialisation); a missing file is an error naming the path. Nothing is
            ever downloaded.

    Parameter names are ``backbone.*`` and ``head.*``; ``posematch.models.checkpoints`` maps the
    official and mmpose checkpoints onto them.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, pretrained: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        if pretrained:
            load_pretrained_backbone(
                backbone, pretrained, keep_prefixes=getattr(backbone, "pretrained_layers", None)
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
