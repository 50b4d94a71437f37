"""HRNet, pose variant (Sun et al., *Deep High-Resolution Representation Learning for Human Pose
Estimation*, CVPR 2019).

Stem of two stride-2 3x3 convs (64 channels), ``layer1`` of Bottleneck blocks (256 channels), then
stages 2-4 of parallel branches at strides 4, 8, 16, 32 with widths ``w, 2w, 4w, 8w``, fused after
every module by 1x1 convs + nearest upsampling (lower to higher resolution) and strided 3x3 convs
(higher to lower). The last module of stage 4 fuses into the stride-4 branch only, so the output is
one (B, w, H/4, W/4) map and every parameter receives a gradient (timm's HRNet builds all four
outputs; see ARCHITECTURE.md, "Known traps").

Module and parameter names follow ``leoxiaobin/deep-high-resolution-net.pytorch``
(``lib/models/pose_hrnet.py``): ``conv1``, ``layer1.0.conv1``, ``transition1.0.0``,
``stage2.0.branches.0.0.conv1``, ``stage2.0.fuse_layers.0.1.0`` ... so an official checkpoint loads
with a prefix only (``posematch.models.checkpoints``). Where the official code stores ``None``
(identity transitions and the diagonal of the fuse matrix) we store a parameter-free ``nn.Identity``,
which leaves the state-dict keys unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from posematch.models.init import init_official_

STEM_CHANNELS = 64


# Top-level names the official init_weights loads from an ImageNet HRNet checkpoint
# (PRETRAINED_LAYERS of the official w32/w48 yaml); the classification-only layers are skipped.
HRNET_PRETRAINED_LAYERS = (
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "layer1",
    "transition1",
    "stage2",
    "transition2",
    "stage3",
    "transition3",
    "stage4",
)


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    """conv (no bias) + BN (+ ReLU) as one Sequential: keys ``0.weight``, ``1.weight`` ..."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (channels ``planes``)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, as in the official code) -> 1x1 convs, output ``4 * planes``."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def make_blocks(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, num_blocks: int
) -> nn.Sequential:
    """``num_blocks`` residual blocks; a 1x1 projection on the first when the width changes."""
    out = planes * block.expansion
    downsample = _conv_bn(inplanes, out, 1, relu=False) if inplanes != out else None
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(out, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def run_branches_and_fuse(
    branches: nn.ModuleList, fuse_layers: nn.ModuleList, relu: nn.Module, xs: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Run each branch on its resolution, then output i = relu(sum_j fuse_layers[i][j](x_j)).

    Shared by HRNet and HRFormer modules; ``fuse_layers[i][i]`` is an identity.
    """
    xs = [branch(x) for branch, x in zip(branches, xs, strict=True)]
    fused = []
    # Each row of fuse_layers is itself a ModuleList (HighResolutionModule, HRFormerModule).
    for row in cast("Iterable[nn.ModuleList]", fuse_layers):
        y = row[0](xs[0])
        for layer, x in zip(row[1:], xs[1:], strict=True):
            y = y + layer(x)
        fused.append(relu(y))
    return fused


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then an all-to-all fusion.

    Args:
        channels: width of each branch, highest resolution first (branch i has stride 4 * 2**i).
        num_blocks: BasicBlocks per branch.
        multi_scale_output: False keeps only the fused highest-resolution output (last module).

    ``forward(list of (B, channels[i], H/2**i, W/2**i))`` returns the fused list (length 1 when
    ``multi_scale_output`` is False).
    """

    def __init__(
        self, channels: Sequence[int], num_blocks: int, multi_scale_output: bool = True
    ) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(make_blocks(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse(channels, i, j) for j in range(n))
            for i in range(n if multi_scale_output else 1)
        )
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse(channels: Sequence[int], i: int, j: int) -> nn.Module:
        """Map branch j onto the resolution and width of branch i (official ordering of layers)."""
        if j == i:
            return nn.Identity()
        if j > i:  # lower resolution: 1x1 conv to the target width, then nearest upsampling
            return nn.Sequential(
                nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                nn.BatchNorm2d(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )
        # Higher resolution: i - j stride-2 3x3 convs; only the last changes the width and has no ReLU.
        steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
        steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return run_branches_and_fuse(self.branches, self.fuse_layers, self.relu, xs)


def add_stem(module: nn.Module, stage1_blocks: int) -> None:
    """The pose-HRNet stem on ``module``, under the official names: two stride-2 3x3 convs
    (``conv1``/``bn1``, ``conv2``/``bn2``, ``relu``) and the Bottleneck ``layer1``."""
    module.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
    module.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
    module.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, 2, 1, bias=False)
    module.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
    module.relu = nn.ReLU(inplace=True)
    module.layer1 = make_blocks(Bottleneck, STEM_CHANNELS, STEM_CHANNELS, stage1_blocks)


class HRNet(nn.Module):
    """Pose HRNet backbone: images (B, 3, H, W) -> features (B, width, H/4, W/4).

    Args:
        width: channels of the highest-resolution branch (32 for W32, 48 for W48); branch i has
            ``width * 2**i`` channels.
        stage1_blocks: Bottleneck blocks of ``layer1`` (4 in the official pose HRNet).
        num_modules: HighResolutionModules in stages 2, 3 and 4 (official: 1, 4, 3).
        num_blocks: BasicBlocks per branch in every module (official: 4).

    Weights are initialised as the official ``init_weights``: every conv normal(std=0.001), BN 1/0.
    An ImageNet file (official ``hrnet_w32-36af842e.pth`` layout) is loaded by
    ``TopDownModel(pretrained=...)``, keeping only the layers in ``pretrained_layers``.
    """

    # The classification layers of the ImageNet file (incre_modules, final_layer...) are skipped.
    pretrained_layers = HRNET_PRETRAINED_LAYERS

    # The stem, set by add_stem (also on HRFormer, which shares this forward).
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    conv2: nn.Conv2d
    bn2: nn.BatchNorm2d
    relu: nn.ReLU
    layer1: nn.Sequential

    def __init__(
        self,
        width: int = 32,
        stage1_blocks: int = 4,
        num_modules: Sequence[int] = (1, 4, 3),
        num_blocks: int = 4,
    ) -> None:
        super().__init__()
        num_modules = tuple(int(m) for m in num_modules)
        if len(num_modules) != 3 or min(num_modules) < 1:
            raise ValueError(f"num_modules={num_modules}: expected 3 positive counts (stages 2-4)")
        self.out_channels = width
        add_stem(self, stage1_blocks)

        previous = [STEM_CHANNELS * Bottleneck.expansion]
        for stage, modules in enumerate(num_modules, start=2):
            channels = [width * 2**i for i in range(stage)]
            self.add_module(f"transition{stage - 1}", self._transition(previous, channels))
            last_stage = stage == 4
            self.add_module(
                f"stage{stage}",
                nn.Sequential(
                    *(
                        HighResolutionModule(
                            channels, num_blocks, not (last_stage and m == modules - 1)
                        )
                        for m in range(modules)
                    )
                ),
            )
            previous = channels
        init_official_(self)

    @staticmethod
    def _transition(previous: list[int], channels: list[int]) -> nn.ModuleList:
        """Official transition: adapt existing branches, grow new ones from the lowest resolution."""
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            if i < len(previous):
                layers.append(_conv_bn(previous[i], c, 3) if previous[i] != c else nn.Identity())
            else:
                n_down = i + 1 - len(previous)
                steps = [_conv_bn(previous[-1], previous[-1], 3, 2) for _ in range(n_down - 1)]
                steps.append(_conv_bn(previous[-1], c, 3, 2))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            # New branches grow from the lowest-resolution output of the previous stage.
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{stage}")(xs)
        return ys[0]
