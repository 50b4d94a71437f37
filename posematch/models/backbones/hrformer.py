"""HRFormer, pose variant (Yuan et al., *HRFormer: High-Resolution Vision Transformer for Dense
Prediction*, NeurIPS 2021).

HRNet's multi-resolution layout (stem, Bottleneck ``layer1``, transitions, stages 2-4 with fusion)
whose branch blocks are transformer blocks: local-window self-attention (7x7 windows, relative
position bias, centre padding) and an FFN with a depth-wise 3x3 conv between its 1x1 convs. Fusion
up-samples bilinearly and down-samples with depth-wise 3x3 stride-2 + 1x1 convs. As in our HRNet, the
last module keeps only the highest-resolution output: (B, width, H/4, W/4).

Names follow mmpose's ``hrformer.py`` (the layout of the released HRFormer pose checkpoints, which
load through ``posematch.models.checkpoints`` with their ``backbone.`` / ``keypoint_head.`` prefixes):
``stage2.0.branches.0.0.attn.attn.qkv.weight``, ``...ffn.dw3x3.weight``, ``stage3.0.fuse_layers...``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from posematch.models.backbones.hrnet import (
    STEM_CHANNELS,
    Bottleneck,
    HRNet,
    add_stem,
    run_branches_and_fuse,
)
from posematch.models.init import init_conv_bn_


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned relative position bias.

    ``forward((N_windows, window**2, C))`` -> same shape.
    """

    relative_position_index: torch.Tensor  # a buffer

    def __init__(self, channels: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + window - 1
        dx = xs[:, None] - xs[None, :] + window - 1
        # Persistent: the released checkpoints carry it, and a strict load expects it.
        self.register_buffer("relative_position_index", dy * (2 * window - 1) + dx)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        bias = bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LocalWindowSelfAttention(nn.Module):
    """Attention in non-overlapping windows of a (B, H*W, C) token map; the map is zero-padded,
    centred, to a multiple of the window (the released models were trained that way)."""

    def __init__(self, channels: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(channels, num_heads, window)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        s = self.window
        ph, pw = math.ceil(h / s) * s - h, math.ceil(w / s) * s - w
        x = F.pad(x.view(b, h, w, c), (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        nh, nw = (h + ph) // s, (w + pw) // s
        x = x.view(b, nh, s, nw, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        x = self.attn(x).view(b, nh, nw, s, s, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, h + ph, w + pw, c)[:, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return x.reshape(b, n, c)


class CrossFFN(nn.Module):
    """1x1 conv (x mlp_ratio) -> depth-wise 3x3 -> 1x1 conv, each followed by BN and GELU."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.dw3x3 = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.norm3 = nn.BatchNorm2d(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.norm2(self.dw3x3(x)))
        return self.act(self.norm3(self.fc2(x)))


class HRFormerBlock(nn.Module):
    """Pre-norm transformer block on a (B, C, H, W) map: x + LSA(LN(x)), then x + FFN(LN(x))."""

    def __init__(
        self, channels: int, num_heads: int, window: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, eps=1e-6)
        self.attn = LocalWindowSelfAttention(channels, num_heads, window)
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)
        self.ffn = CrossFFN(channels, int(channels * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens), h, w))
        ffn = self.ffn(self.norm2(tokens).transpose(1, 2).reshape(b, c, h, w))
        tokens = tokens + self.drop_path(ffn.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class HRFormerModule(nn.Module):
    """Parallel branches of HRFormerBlocks, then HRFormer's fusion (see module docstring).

    Args:
        channels, num_heads: per branch, highest resolution first.
        drop_paths: stochastic-depth rate of each block of a branch.
        multi_scale_output: False keeps only the fused highest-resolution output.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_heads: Sequence[int],
        window: int,
        mlp_ratio: float,
        drop_paths: Sequence[float],
        multi_scale_output: bool = True,
    ) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*(HRFormerBlock(c, heads, window, mlp_ratio, p) for p in drop_paths))
            for c, heads in zip(channels, num_heads, strict=True)
        )
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse(channels, i, j) for j in range(n))
            for i in range(n if multi_scale_output else 1)
        )
        self.relu = nn.ReLU()

    @staticmethod
    def _fuse(channels: Sequence[int], i: int, j: int) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:
            return nn.Sequential(
                nn.Conv2d(channels[j], channels[i], 1, bias=False),
                nn.BatchNorm2d(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="bilinear", align_corners=False),
            )
        steps = []
        for k in range(i - j):
            last = k == i - j - 1
            out = channels[i] if last else channels[j]
            layers: list[nn.Module] = [
                nn.Conv2d(channels[j], channels[j], 3, 2, 1, groups=channels[j], bias=False),
                nn.BatchNorm2d(channels[j]),
                nn.Conv2d(channels[j], out, 1, bias=False),
                nn.BatchNorm2d(out),
            ]
            if not last:
                layers.append(nn.ReLU())
            steps.append(nn.Sequential(*layers))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return run_branches_and_fuse(self.branches, self.fuse_layers, self.relu, xs)


class HRFormer(nn.Module):
    """HRFormer pose backbone: images (B, 3, H, W) -> features (B, width, H/4, W/4).

    Args:
        width: channels of the highest-resolution branch (32 for HRFormer-S, 78 for HRFormer-B);
            branch i has ``width * 2**i`` channels.
        num_heads: attention heads of branches 1-4 (S: 1, 2, 4, 8; B: 2, 4, 8, 16).
        stage1_blocks: Bottleneck blocks of ``layer1`` (2).
        num_modules: modules of stages 2, 3, 4 (1, 4, 2).
        num_blocks: transformer blocks per branch and module (2).
        window: side of the attention windows, in feature pixels (7).
        mlp_ratio: FFN expansion (4).
        drop_path_rate: stochastic depth, rising linearly to this over the blocks of stages 2-4
            (S: 0.1, B: 0.2 in the released pose configs).
    """

    def __init__(
        self,
        width: int = 32,
        num_heads: Sequence[int] = (1, 2, 4, 8),
        stage1_blocks: int = 2,
        num_modules: Sequence[int] = (1, 4, 2),
        num_blocks: int = 2,
        window: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        num_modules = tuple(int(m) for m in num_modules)
        num_heads = tuple(int(h) for h in num_heads)
        if len(num_modules) != 3 or len(num_heads) != 4:
            raise ValueError(
                f"num_modules={num_modules}, num_heads={num_heads}: expected 3 and 4 entries"
            )
        self.out_channels = width
        add_stem(self, stage1_blocks)

        # Plain floats (not torch.linspace): construction must also work under torch.device("meta").
        n_blocks = sum(num_modules) * num_blocks
        rates = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        previous = [STEM_CHANNELS * Bottleneck.expansion]
        for stage, modules in enumerate(num_modules, start=2):
            channels = [width * 2**i for i in range(stage)]
            self.add_module(f"transition{stage - 1}", HRNet._transition(previous, channels))
            stage_modules = []
            for m in range(modules):
                drop_paths, rates = rates[:num_blocks], rates[num_blocks:]
                last = stage == 4 and m == modules - 1
                stage_modules.append(
                    HRFormerModule(
                        channels, num_heads[:stage], window, mlp_ratio, drop_paths, not last
                    )
                )
            self.add_module(f"stage{stage}", nn.Sequential(*stage_modules))
            previous = channels
        # Released mmpose HRFormer checkpoints may keep all four outputs of the last module; those
        # fusions are unused here (and excluded from the published parameter counts): skip them.
        last_module = num_modules[2] - 1
        self.checkpoint_keys_to_skip = tuple(
            f"stage4.{last_module}.fuse_layers.{i}." for i in (1, 2, 3)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # HRNet's conv/BN initialisation; transformer parts as in Swin / mmpose (trunc normal 0.02).
        for m in self.modules():
            if init_conv_bn_(m):
                continue
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    # Same stem, transitions and stage attributes as HRNet, so the same wiring runs both.
    forward = HRNet.forward
