"""TopDownModel normalises pipeline crops (pixel units, any dtype) itself, identically."""

from __future__ import annotations

import torch
from torch import nn

from posematch.models.pose_model import TopDownModel


class Probe(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x


def test_uint8_and_float_pixels_are_normalised_with_imagenet_statistics():
    probe = Probe()
    model = TopDownModel(probe, nn.Identity())
    pixels = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    model(pixels)
    torch.testing.assert_close(probe.seen, torch.zeros(2, 3, 4, 4))
    model(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    expected = (255 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor(
        [58.395, 57.12, 57.375]
    )
    torch.testing.assert_close(probe.seen[0, :, 0, 0], expected)
    assert "mean" not in model.state_dict() and "inv_std" not in model.state_dict()
