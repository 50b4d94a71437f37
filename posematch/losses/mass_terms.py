"""DM-Count's two regularisers of an optimal-transport loss on relu maps, per joint.

DM-Count (Wang et al., NeurIPS 2020; crowd counting: relu density maps, normalised, Sinkhorn) trains
``wot * OT + |sum(map) - count| + wtv * count * sum |map / sum(map) - dots / count|`` with wot 0.1
and wtv 0.01. A pose heatmap has one dot, so count = 1, and relative to the transport term the
weights are 10 (mass) and 0.1 (total variation). Issue 13 asks whether this family keeps the
paper's relu heatmaps alive (results/relu.md measures it); the matching loss adds them when
``mass_weight`` or ``tv_weight`` is above 0.

- mass: |sum_pixels relu(H) - target|, in the heatmap's own units (unitless). Why it may help: the
  transport term's gradient lowers a whole relu map once the map has learnt anything (results/
  relu.md), and only the unnormalised sum can say "not lower than this". Its gradient reaches the
  positive pixels only, so a map with no positive value still gets nothing.
- total variation (DM-Count's name; it is the L1 distance, twice the total-variation distance):
  sum_pixels |S - D|, in [0, 2], with S = relu(H) / sum relu(H) (the loss's suppliers, uniform for
  a map with no positive value, where DM-Count's would be 0) and D the demanders' masses on their
  pixels (a demander just outside the grid, near the border, is left out, as DM-Count's discrete
  map holds only the dots inside the image). Unlike the mass term it moves the loss's optimum:
  it pulls S towards the demanders.

Both terms are unitless: the matching loss does not scale them by its ``pixel_size``, so under
``pixel_size`` 4 (``loss=sinkhorn_input_px``) the same weights count 4x less against the transport
term. Both use relu's true gradient (``dead_grad`` applies to the transport term only). For a map
with no positive value the mass term's value is the target, the total variation about 2 - 2 / N,
and neither has a gradient.
"""

from __future__ import annotations

import math

import torch

from posematch.demanders import make_demanders
from posematch.losses.suppliers import suppliers_from_heatmaps


def check_weights(mass_weight: float, mass_target: float, tv_weight: float) -> None:
    """Raise a ValueError naming the option that is not a finite number >= 0 (target > 0)."""
    for name, value in (("mass_weight", mass_weight), ("tv_weight", tv_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: must be a finite number >= 0 (0 = off)")
    if not (
        isinstance(mass_target, (int, float)) and math.isfinite(mass_target) and mass_target > 0
    ):
        raise ValueError(
            f"mass_target={mass_target!r}: the unnormalised heatmap sum the mass term pulls "
            "towards must be a positive number"
        )


def mass_l1(heatmaps: torch.Tensor, target: float) -> torch.Tensor:
    """(B, K, h, w) heatmaps -> (B, K) |sum relu(H) - target|."""
    return (heatmaps.relu().flatten(2).sum(-1) - target).abs()


def total_variation(heatmaps: torch.Tensor, dots: torch.Tensor, demanders: str) -> torch.Tensor:
    """(B, K, h, w) heatmaps and (B, K, 2) dots (x, y) in heatmap px -> (B, K) sum |S - D|."""
    h, w = heatmaps.shape[-2:]
    suppliers = suppliers_from_heatmaps(heatmaps)  # (B, K, h * w)
    positions, masses = make_demanders(dots, demanders)  # (B, K, M, 2), (B, K, M)
    col, row = positions[..., 0].long(), positions[..., 1].long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    index = torch.where(inside, row * w + col, 0)
    masses = torch.where(inside, masses, 0.0).to(suppliers.dtype)
    target = torch.zeros_like(suppliers).scatter_add_(-1, index, masses)
    return (suppliers - target).abs().sum(-1)


def mass_terms(
    heatmaps: torch.Tensor,
    dots: torch.Tensor,
    *,
    mass_weight: float,
    mass_target: float,
    tv_weight: float,
    demanders: str,
) -> torch.Tensor:
    """(B, K) mass_weight * mass_l1 + tv_weight * total_variation; a term with weight 0 is skipped.

    ``dots`` must be finite (the caller parks ignored joints' dots on the grid).
    """
    out = heatmaps.new_zeros(heatmaps.shape[:2])
    if mass_weight > 0:
        out = out + mass_weight * mass_l1(heatmaps, mass_target)
    if tv_weight > 0:
        out = out + tv_weight * total_variation(heatmaps, dots, demanders)
    return out
