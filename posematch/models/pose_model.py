"""Top-down pose model: a backbone and a heatmap head, nothing else (no loss, no decoder)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posematch.models.checkpoints import init_whole_model, load_pretrained_backbone, packaged_file

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 255 x (0.485, 0.456, 0.406)
IMAGENET_STD = (58.395, 57.12, 57.375)  # 255 x (0.229, 0.224, 0.225)


def pretrained_file(value: object) -> str | None:
    """The file a ``model.pretrained`` / ``model.init_from`` value names: None for null, ``""`` and
    ``"none"`` (any case: ``model.pretrained=none`` on the command line trains from scratch);
    ``package:<module>/<path>`` is a file inside an installed Python package, found through the
    package (``posematch.models.checkpoints.packaged_file``); anything else is a path."""
    if value is None or str(value).strip().lower() in ("none", ""):
        return None
    return str(packaged_file(str(value))) if str(value).startswith("package:") else str(value)


class TopDownModel(nn.Module):
    """Images (B, 3, H, W) in pixel units -> heatmaps (B, K, H/4, W/4), raw (no activation).

    The input is what the data pipeline yields: uint8 (or float) crops in 0-255, channels in the
    pipeline's order (RGB unless configured otherwise). The model normalises them itself,
    (x - mean) / std, on whatever device it runs, so loader workers ship uint8 (4x less data) and
    every caller (training, evaluation, inference on new images) normalises the same way.

    Args:
        backbone: images -> features (``ResNet``, ``HRNet``, ...).
        head: features -> heatmaps (``DeconvHead``, ``Conv1x1Head``).
        pretrained: optional local ImageNet checkpoint loaded into the backbone only (the head keeps
            its official initialisation); a missing file is an error naming the path. Nothing is
            ever downloaded. None or ``"none"`` (any case; ``model.pretrained=none`` on the command
            line) trains from scratch.
        mean, std: per-channel normalisation in pixel units (ImageNet's by default, applied in the
            channel order the pipeline feeds, as the official code does). Backbones trained with
            another one say so in their yaml (EfficientNet-Lite0: 127.5 and 127.5, i.e. [-1, 1]).
        init_from: optional checkpoint that initialises the whole model, backbone and head
            (posematch, official HRNet / SimpleBaseline / HRFormer or mmpose pose checkpoints),
            after ``pretrained``: the start of a fine-tune. Tensors whose shape differs (another
            joint count) keep their initialisation and are named in a warning; a file sharing no
            tensor with the model is an error. Not ``resume``: the optimizer, schedule and epoch
            start afresh.

    Parameter names are ``backbone.*`` and ``head.*``; ``posematch.models.checkpoints`` maps the
    official and mmpose checkpoints onto them.
    """

    mean: torch.Tensor  # buffers
    inv_std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        pretrained: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        stds = [float(v) for v in std]
        if len(stds) != 3 or not all(v > 0 for v in stds):
            raise ValueError(f"model.std={stds}: three positive values expected, one a channel")
        mean_t = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
        std_t = torch.tensor(stds).view(1, 3, 1, 1)
        # Not persistent: checkpoints (ours and the official ones) hold only learned weights.
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("inv_std", 1.0 / std_t, persistent=False)
        pretrained = pretrained_file(pretrained)
        if pretrained:
            load_pretrained_backbone(
                backbone, pretrained, keep_prefixes=getattr(backbone, "pretrained_layers", None)
            )
        init_file = pretrained_file(init_from)
        if init_file:
            init_whole_model(self, Path(init_file))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.mean.dtype) - self.mean) * self.inv_std
        return self.head(self.backbone(x))
