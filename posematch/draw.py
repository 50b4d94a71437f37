"""Drawing predicted poses on images with OpenCV: limbs of the spec's skeleton, joints, boxes.

Colours follow the joint names of the ``KeypointSpec``: left joints and limbs (``left_*``, ``l_*``)
orange, right ones (``right_*``, ``r_*``) blue, the others green (BGR, as cv2 draws). Line thickness
and joint radius grow with the image size, so a 4K frame and a 320 px thumbnail both stay legible.
A joint whose score is below ``vis_thr`` is not drawn, nor is any limb touching it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from posematch.data.keypoints import KeypointSpec

LEFT = (0, 128, 255)  # orange (BGR)
RIGHT = (255, 128, 0)  # blue
CENTRE = (0, 200, 0)  # green
BOX = (200, 200, 200)  # light grey


def side_colour(name: str) -> tuple[int, int, int]:
    """BGR colour of a joint from its name: left, right or centre."""
    lower = name.lower()
    if lower.startswith(("left", "l_")):
        return LEFT
    if lower.startswith(("right", "r_")):
        return RIGHT
    return CENTRE


def line_thickness(image: np.ndarray) -> int:
    """Limb thickness in pixels for an image: 1 px per 320 px of its longer side, at least 1."""
    return max(1, round(max(image.shape[:2]) / 320))


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    spec: KeypointSpec,
    vis_thr: float = 0.3,
    box: Sequence[float] | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one person on ``image`` in place and return it.

    Args:
        image: (H, W, 3) uint8 BGR image.
        keypoints: (K, 2) joint positions (x, y) in image pixels (pixel centres).
        scores: (K,) joint scores; joints with ``score < vis_thr`` are not drawn.
        spec: joint names (colours) and skeleton (limbs).
        vis_thr: score threshold for drawing a joint.
        box: optional person box (x, y, w, h) in image pixels, drawn thin.
        thickness: limb thickness in pixels; default from the image size (``line_thickness``).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = spec.num_keypoints
    if keypoints.shape[0] != k or scores.shape[0] != k:
        raise ValueError(
            f"draw_pose: keypoints {keypoints.shape}, scores {scores.shape}; want ({k}, 2), ({k},)"
        )
    t = line_thickness(image) if thickness is None else max(1, int(thickness))
    if box is not None:
        x, y, w, h = (float(v) for v in box)
        p1, p2 = (int(np.rint(x)), int(np.rint(y))), (int(np.rint(x + w)), int(np.rint(y + h)))
        cv2.rectangle(image, p1, p2, BOX, max(1, t // 2), cv2.LINE_AA)
    shown = np.isfinite(keypoints).all(1) & (scores >= vis_thr)
    # Integer pixel centres; far-off points are clipped so cv2's int arithmetic cannot overflow.
    pixels = np.rint(np.clip(np.nan_to_num(keypoints), -1e6, 1e6)).astype(np.int64).tolist()
    points = [tuple(p) if ok else None for p, ok in zip(pixels, shown.tolist(), strict=True)]
    for a, b in spec.skeleton:
        pa, pb = points[a], points[b]
        if pa is None or pb is None:
            continue
        # A limb between two sides (e.g. shoulder to shoulder) takes the centre colour.
        ca, cb = side_colour(spec.names[a]), side_colour(spec.names[b])
        cv2.line(image, pa, pb, ca if ca == cb else CENTRE, t, cv2.LINE_AA)
    for j, p in enumerate(points):
        if p is not None:
            cv2.circle(image, p, t + 1, side_colour(spec.names[j]), -1, cv2.LINE_AA)
    return image
