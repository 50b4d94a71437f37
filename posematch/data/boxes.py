"""Person boxes as centre/scale, and the affine maps between image pixels and the network input.

Follows the official SimpleBaseline / HRNet code (``_box2cs``, ``get_affine_transform``):
- a box (x, y, w, h) in image pixels becomes a centre (x + w/2, y + h/2) and a scale = box size / 200
  (``PIXEL_STD``), after growing the short side to the input aspect ratio and padding by 1.25;
- the crop maps the centre to the middle of the input and ``scale[0] * 200`` image pixels onto the
  input width, rotated by ``rot`` degrees (counter-clockwise in the image as displayed).
``udp=True`` uses the unbiased data processing map (Huang et al., CVPR 2020), which aligns the first
and last pixel centres: ``(input_size - 1) / (scale * 200)`` pixels per image pixel.
All matrices are 2x3 float64, applied to (x, y) pixel-centre coordinates.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PIXEL_STD = 200.0


def box_to_center_scale(
    box: tuple[float, float, float, float] | np.ndarray,
    aspect_ratio: float,
    padding: float = 1.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) in image pixels and scale (2,) in units of 200 px, from an (x, y, w, h) box.

    Args:
        box: (x, y, w, h), top-left corner and size in image pixels.
        aspect_ratio: input width / input height (0.75 for 192x256).
        padding: factor applied to the scale (official: 1.25).
    """
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) / PIXEL_STD * padding


def affine_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    rot: float,
    output_size: tuple[int, int],
    inverse: bool = False,
    udp: bool = False,
) -> np.ndarray:
    """2x3 matrix mapping image pixels to output pixels (or back when ``inverse``).

    Args:
        center: (2,) crop centre in image pixels.
        scale: (2,) crop size in units of 200 px (the official code uses ``scale[0]`` for both axes).
        rot: rotation in degrees.
        output_size: (width, height) of the output in pixels.
        inverse: return the output -> image map instead.
        udp: unbiased (UDP) map instead of the official one.
    """
    cx, cy = float(center[0]), float(center[1])
    out_w, out_h = output_size
    src_w, src_h = float(scale[0]) * PIXEL_STD, float(scale[1]) * PIXEL_STD
    if udp:
        sx, sy = (out_w - 1) / src_w, (out_h - 1) / src_h
        ox, oy = 0.5 * (out_w - 1), 0.5 * (out_h - 1)
    else:
        # The official 3-point construction (centre, a point half the crop width above it, and the
        # right-angle corner) in closed form, in float64: a similarity of factor out_w / src_w that
        # takes the centre to (out_w / 2, out_h / 2).
        sx = sy = out_w / src_w
        ox, oy = 0.5 * out_w, 0.5 * out_h
    cs, sn = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    mat = np.array(
        [
            [sx * cs, sx * sn, ox - sx * (cs * cx + sn * cy)],
            [-sy * sn, sy * cs, oy - sy * (-sn * cx + cs * cy)],
        ]
    )
    # The inverse is computed, not re-derived from swapped points, so round trips are exact to
    # float64 precision (the official code's float32 points lose ~1e-4 px).
    return cv2.invertAffineTransform(mat) if inverse else mat


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points mapped by a 2x3 matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]
