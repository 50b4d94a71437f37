"""The expected-distance loss against a hand-worked example and against the matching loss with one
demander (a single column: the transport plan is the suppliers themselves, whatever reg)."""

from __future__ import annotations

import pytest
import torch

from posematch.losses.expected_distance import ExpectedDistanceLoss
from posematch.losses.sinkhorn import sinkhorn_matching_loss


def test_hand_worked_example():
    heatmaps = torch.full((1, 1, 3, 3), -1.0, dtype=torch.float64)
    heatmaps[0, 0, 0, 0] = 2.0  # pixel centre (x=0, y=0): half the mass, at the dot
    heatmaps[0, 0, 2, 2] = 2.0  # pixel centre (x=2, y=2): half the mass, sqrt(8) from the dot
    dot = torch.zeros(1, 1, 2, dtype=torch.float64)
    value = ExpectedDistanceLoss()(heatmaps, dot)
    assert float(value) == pytest.approx(0.5 * 8**0.5, abs=1e-12)
    assert float(ExpectedDistanceLoss(pixel_size=4.0)(heatmaps, dot)) == pytest.approx(2 * 8**0.5)


def test_equals_the_matching_loss_with_one_demander_at_a_pixel_centre():
    torch.manual_seed(0)
    heatmaps = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    dots = torch.randint(0, 6, (2, 3, 2)).to(torch.float64)  # pixel centres (x < 6, y < 6 < 8)
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    ours = ExpectedDistanceLoss(reduction="sum")(heatmaps, dots, weights)
    matching = sinkhorn_matching_loss(
        heatmaps, dots, weights, demanders="naive", reduction="sum", reg=0.5
    )
    torch.testing.assert_close(ours, matching, rtol=1e-9, atol=1e-9)


def test_gradient_matches_finite_differences_in_float64():
    torch.manual_seed(1)
    heatmaps = (torch.rand(1, 2, 5, 4, dtype=torch.float64) + 0.1).requires_grad_()
    dots = torch.tensor([[[1.3, 2.7], [0.2, 4.1]]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h: ExpectedDistanceLoss()(h, dots), (heatmaps,))


@pytest.mark.parametrize(("option", "value"), [("pixel_size", 0.0), ("reduction", "mean"),
                                               ("dead_grad", 2.0)])  # fmt: skip
def test_bad_options_are_named(option, value):
    with pytest.raises(ValueError, match=option):
        ExpectedDistanceLoss(**{option: value})
