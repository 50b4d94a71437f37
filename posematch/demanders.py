"""Demanders of the distribution-matching loss, built from ground-truth dots.

Qu et al., NeurIPS 2022, Sec. 3: the ground-truth "dot" of a joint becomes a small discrete
distribution (the demanders) that the predicted heatmap (the suppliers) is transported onto.

- ``naive``: one demander of mass 1 at the centre of the heatmap pixel holding the dot. Pixel
  (row i, col j) covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5), so the pixel is (floor(y + 0.5),
  floor(x + 0.5)).
- ``subpixel``: the four pixel centres around the dot, (x0, y0), (x0 + 1, y0), (x0, y0 + 1),
  (x0 + 1, y0 + 1) with x0 = floor(x), y0 = floor(y), weighted by the bilinear masses
  d_i = (1 - |x - x_i|)(1 - |y - y_i|). The masses sum to 1 and their weighted mean is the dot.

Demanders are points in the heatmap plane; near the border a sub-pixel demander may sit on the
centre of a pixel just outside the grid (its mass is then small), which keeps the mean exact.

This module is a leaf shared by ``codecs`` (which draws and encodes targets) and ``losses`` (which
builds the transport problem from the dots it is handed); it imports nothing of posematch.
"""

from __future__ import annotations

from typing import Literal

import torch

DemanderMode = Literal["naive", "subpixel"]
DEMANDER_MODES: tuple[str, ...] = ("naive", "subpixel")


def num_demanders(mode: str) -> int:
    """Number of demanders per dot for ``mode``."""
    check_mode(mode)
    return 1 if mode == "naive" else 4


def check_mode(mode: str) -> None:
    """Raise a ValueError naming the option when ``mode`` is not a demander formulation."""
    if mode not in DEMANDER_MODES:
        raise ValueError(f"demanders={mode!r}: expected one of {DEMANDER_MODES}")


def make_demanders(dots: torch.Tensor, mode: str = "subpixel") -> tuple[torch.Tensor, torch.Tensor]:
    """Demander positions and masses for dots.

    Args:
        dots: (..., 2) float, (x, y) in heatmap pixels.
        mode: ``"naive"`` or ``"subpixel"``.

    Returns:
        positions: (..., M, 2) in heatmap pixels, M = 1 (naive) or 4 (subpixel).
        masses: (..., M), non-negative, summing to 1 over M.
    """
    check_mode(mode)
    if mode == "naive":
        positions = torch.floor(dots + 0.5).unsqueeze(-2)
        return positions, torch.ones(positions.shape[:-1], dtype=dots.dtype, device=dots.device)
    corner = torch.floor(dots)
    frac = dots - corner
    # Corner order: (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1).
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=dots.dtype, device=dots.device)
    positions = corner.unsqueeze(-2) + offsets
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    wx = torch.cat([1 - fx, fx, 1 - fx, fx], dim=-1)
    wy = torch.cat([1 - fy, 1 - fy, fy, fy], dim=-1)
    return positions, wx * wy
