"""DM-Count's regularisers on the matching loss, against hand-worked values."""

from __future__ import annotations

import pytest
import torch

from posematch.losses.mass_terms import mass_l1, total_variation
from posematch.losses.sinkhorn import SinkhornMatchingLoss, sinkhorn_matching_loss

# One 2x2 map: relu sum 4, suppliers (0.25, 0, 0, 0.75) in row-major order.
HEAT = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]], dtype=torch.float64)


def test_mass_term_by_hand_and_its_gradient_reaches_only_positive_pixels():
    heat = HEAT.clone().requires_grad_(True)
    value = mass_l1(heat, target=1.0)
    assert value.item() == pytest.approx(3.0)  # |1 + 3 - 1|
    value.sum().backward()
    assert heat.grad.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    # Below the target the sign flips: every positive pixel is pushed up.
    low = (HEAT / 8).requires_grad_(True)  # sum 0.5
    mass_l1(low, target=1.0).sum().backward()
    assert low.grad.flatten().tolist() == [-1.0, 0.0, 0.0, -1.0]


def test_total_variation_by_hand():
    # A dot on the centre of pixel (row 1, col 1): D = (0, 0, 0, 1); |0.25| + 0 + 0 + |0.75 - 1|.
    on_pixel = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)
    assert total_variation(HEAT, on_pixel, "subpixel").item() == pytest.approx(0.5)
    # Half-way between columns 0 and 1 of row 0: D = (0.5, 0.5, 0, 0).
    between = torch.tensor([[[0.5, 0.0]]], dtype=torch.float64)
    assert total_variation(HEAT, between, "subpixel").item() == pytest.approx(0.25 + 0.5 + 0 + 0.75)
    # The naive demander sits on the pixel holding the dot, (row 0, col 1) for x = 0.6.
    naive = torch.tensor([[[0.6, 0.0]]], dtype=torch.float64)
    assert total_variation(HEAT, naive, "naive").item() == pytest.approx(0.25 + 1 + 0 + 0.75)


def test_a_demander_outside_the_grid_is_left_out():
    # x = 1.5 on a 2-wide grid: half the mass on (row 0, col 1), half on col 2 (outside, dropped):
    # D = (0, 0.5, 0, 0). Clamping it onto col 1 instead would give D = (0, 1, 0, 0) and 2.0.
    dot = torch.tensor([[[1.5, 0.0]]], dtype=torch.float64)
    assert total_variation(HEAT, dot, "subpixel").item() == pytest.approx(0.25 + 0.5 + 0 + 0.75)


def test_the_loss_adds_the_weighted_terms_per_joint_and_skips_ignored_joints():
    heat = torch.cat([HEAT, HEAT], dim=1).requires_grad_(True)  # (1, 2, 2, 2)
    # The ignored joint's dot is NaN, as a loader hands an unlabelled joint.
    dots = torch.tensor([[[1.0, 1.0], [float("nan"), float("nan")]]], dtype=torch.float64)
    weights = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    plain = sinkhorn_matching_loss(heat, dots, weights, reduction="none")
    both = sinkhorn_matching_loss(heat, dots, weights, reduction="none", mass_weight=10.0,
                                  mass_target=2.0, tv_weight=0.1)  # fmt: skip
    # the joint weight scales the regularisers too: 0.5 * (10 * |4 - 2| + 0.1 * 0.5)
    assert (both - plain)[0, 0].item() == pytest.approx(0.5 * (10 * 2.0 + 0.1 * 0.5))
    assert both[0, 1].item() == 0.0
    both.sum().backward()
    assert torch.isfinite(heat.grad).all() and torch.count_nonzero(heat.grad[0, 1]).item() == 0


def test_a_dead_map_gets_no_gradient_from_either_term():
    # The terms anchor a live relu map; a map with no positive value is beyond their reach too.
    heat = torch.full((1, 1, 3, 3), -1.0, dtype=torch.float64, requires_grad=True)
    dots = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)
    sinkhorn_matching_loss(heat, dots, mass_weight=10.0, tv_weight=0.1, reduction="sum").backward()
    assert torch.count_nonzero(heat.grad).item() == 0


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("mass_weight", {"mass_weight": -1.0}),
        ("tv_weight", {"tv_weight": float("nan")}),
        ("mass_target", {"mass_target": 0.0}),
    ],
)
def test_bad_weights_name_the_option(option, kwargs):
    with pytest.raises(ValueError, match=option):
        SinkhornMatchingLoss(**kwargs)
