"""Maps between input-image pixels (after the affine crop) and heatmap pixels.

Both use the pixel-centre convention (pixel (row i, col j) has its centre at (x=j, y=i)).
- standard (SimpleBaseline / HRNet): x_heatmap = x_image / stride, stride = input size / heatmap size
  (the official ``feat_stride``);
- ``udp`` (Huang et al., CVPR 2020, unbiased data processing): x_heatmap = x_image * (w_h - 1) /
  (w_in - 1), so that the first and last pixel centres of both grids coincide.
"""

from __future__ import annotations

from typing import cast

import torch


def _check_size(name: str, size: tuple[int, ...]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"{name}={size!r}: expected two positive integers (width, height)")
    return int(size[0]), int(size[1])


class HeatmapGeometry:
    """Scale factors between the network input and its heatmaps.

    Args:
        input_size: (width, height) of the network input in pixels.
        heatmap_size: (width, height) of the heatmaps in pixels.
        udp: use the UDP mapping instead of the official ``x / stride``.
    """

    def __init__(
        self, input_size: tuple[int, int], heatmap_size: tuple[int, int], udp: bool = False
    ) -> None:
        self.input_size = _check_size("input_size", tuple(input_size))
        self.heatmap_size = _check_size("heatmap_size", tuple(heatmap_size))
        if not isinstance(udp, bool):  # a string from the command line would read as true
            raise ValueError(f"udp={udp!r}: expected true or false")
        self.udp = udp
        self.scale: tuple[float, float]  # (x, y): one factor per entry of the two sizes
        if udp:
            if min(self.input_size) < 2 or min(self.heatmap_size) < 2:
                raise ValueError("udp=True needs input_size and heatmap_size of at least 2 pixels")
            self.scale = cast(
                tuple[float, float],
                tuple(
                    (h - 1) / (i - 1)
                    for i, h in zip(self.input_size, self.heatmap_size, strict=True)
                ),
            )
        else:
            self.scale = cast(
                tuple[float, float],
                tuple(h / i for i, h in zip(self.input_size, self.heatmap_size, strict=True)),
            )

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(..., 2) input-image pixels -> heatmap pixels."""
        return keypoints * keypoints.new_tensor(self.scale)

    def to_input(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(..., 2) heatmap pixels -> input-image pixels."""
        return keypoints / keypoints.new_tensor(self.scale)
