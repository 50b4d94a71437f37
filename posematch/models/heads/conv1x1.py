"""HRNet / HRFormer head: one conv from the stride-4 features to the heatmaps.

Named ``final_layer`` like the official ``pose_hrnet.py``; initialised normal(std=0.001), bias 0.

``activation="softplus"`` (not in the official models) makes every heatmap value positive. The
matching loss normalises relu(H); trained from scratch with Adam, a plain conv head drives every
pixel of most heatmaps below zero within a few hundred steps (``results/relu.md``), and a heatmap
without positive values has no gradient. With softplus the relu is the identity and no pixel dies. It adds no
parameter, so checkpoints load either way.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("none", "softplus", "exp", "zscore", "zscore_exp")


class MapExp(nn.Module):
    """exp(z - max z) over each map (B, K, h, w): positive, at most 1. Normalised, it is softmax(z)
    over the map's pixels, so a loss that normalises the heatmap sees suppliers set by logit
    differences alone (a few units concentrate the mass); the max is subtracted so that nothing
    overflows, which leaves the normalised map unchanged."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(z - z.detach().flatten(2).amax(2)[..., None, None])


class MapZScore(nn.Module):
    """(z - mean z) / std z over each map (B, K, h, w): the map's standard scores.

    A loss that normalises relu(H) reads only the map's shape, so the map's scale (its contrast) is
    a direction the loss never stops rewarding: under a distance cost a sharper map is always
    cheaper, and with Adam every channel's weights grow along it (results/relu.md). Standardised,
    the map has no free scale: the suppliers depend on the direction of the last layer's weights
    only. A standardised map always has values above zero (its mean is 0 and its spread 1), so
    relu(H) cannot die. ``exp=True`` returns exp(z - max z): normalised, softmax(z).
    """

    def __init__(self, exp: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.exp = exp
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(2)
        mean = flat.mean(2)[..., None, None]
        std = flat.std(2, correction=0)[..., None, None]
        scores = (z - mean) / (std + self.eps)
        if not self.exp:
            return scores
        return torch.exp(scores - scores.detach().flatten(2).amax(2)[..., None, None])

    def extra_repr(self) -> str:
        return f"exp={self.exp}"


def output_activation(name: str, softplus_beta: float = 1.0) -> nn.Module:
    """The heads' output activation: ``none`` (identity, the official heads), ``softplus``
    (log(1 + exp(beta x)) / beta: positive everywhere, relu's limit as beta grows; its slope below
    zero, sigmoid(beta x), lets a heatmap with no value above zero still be pushed up) or ``exp``
    (``MapExp``: normalised, the softmax of the logits), ``zscore`` (``MapZScore``: each map's
    standard scores, no free scale; the loss's relu reads them) or ``zscore_exp`` (softmax of the
    standard scores)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}: expected one of {ACTIVATIONS}")
    if not softplus_beta > 0:
        raise ValueError(f"softplus_beta={softplus_beta!r}: must be positive")
    if name == "exp":
        return MapExp()
    if name in ("zscore", "zscore_exp"):
        return MapZScore(exp=name == "zscore_exp")
    return nn.Softplus(beta=float(softplus_beta)) if name == "softplus" else nn.Identity()


class Conv1x1Head(nn.Module):
    """Features (B, in_channels, h, w) -> heatmaps (B, num_keypoints, h, w).

    Args:
        in_channels: channels of the backbone output (the HRNet width: 32 for W32, 48 for W48).
        num_keypoints: heatmap channels K (17 for COCO, 16 for MPII).
        kernel_size: 1 (official FINAL_CONV_KERNEL) or 3.
        activation: ``"none"`` (official: raw conv output) or ``"softplus"`` (positive heatmaps).
        output_scale: the conv output is multiplied by this before the activation (1 = official).
            With softplus and a normalising loss the heatmap's shape is set by logit differences
            of several units, which Adam (steps of about lr per parameter) reaches slowly from the
            0.001-std initialisation; a scale > 1 moves the logits that much faster.
        softplus_beta: the softplus's sharpness (``output_activation``); 1 = torch's default.
    """

    def __init__(
        self,
        in_channels: int = 32,
        num_keypoints: int = 17,
        kernel_size: int = 1,
        activation: str = "none",
        output_scale: float = 1.0,
        softplus_beta: float = 1.0,
    ) -> None:
        super().__init__()
        if not output_scale > 0:
            raise ValueError(f"output_scale={output_scale}: must be positive")
        self.output_scale = float(output_scale)
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size={kernel_size}: expected 1 or 3")
        self.activation = output_activation(activation, softplus_beta)
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, kernel_size, 1, kernel_size // 2)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        assert self.final_layer.bias is not None  # nn.Conv2d has one by default
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.final_layer(features)
        if self.output_scale != 1.0:
            out = out * self.output_scale
        return self.activation(out)
