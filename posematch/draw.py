"""Drawing with OpenCV: predicted poses on images (limbs of the spec's skeleton, joints, person boxes
and their scores) and the heatmap panels of training (``heatmap_panel``).

Colours follow the joint names of the ``KeypointSpec``: left joints and limbs (``left_*``, ``l_*``)
orange, right ones (``right_*``, ``r_*``) blue, the others green (BGR, as cv2 draws). Line thickness
and joint radius grow with the image size, so a 4K frame and a 320 px thumbnail both stay legible.
A joint whose score is below ``vis_thr`` is not drawn, nor is any limb touching it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from posematch.keypoints import KeypointSpec

LEFT = (0, 128, 255)  # orange (BGR)
RIGHT = (255, 128, 0)  # blue
CENTRE = (0, 200, 0)  # green
BOX = (0, 215, 255)  # amber (BGR): person boxes and their score labels, apart from limb colours


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
    label: str | None = None,
) -> np.ndarray:
    """Draw one person on ``image`` in place and return it.

    Args:
        image: (H, W, 3) uint8 BGR image.
        keypoints: (K, 2) joint positions (x, y) in image pixels (pixel centres).
        scores: (K,) joint scores; joints with ``score < vis_thr`` are not drawn.
        spec: joint names (colours) and skeleton (limbs).
        vis_thr: score threshold for drawing a joint.
        box: optional person box (x, y, w, h) in image pixels, drawn as thick as the limbs.
        thickness: limb thickness in pixels; default from the image size (``line_thickness``).
        label: optional text (the instance score) on a filled tag at the box's top-left corner,
            or above the drawn joints when there is no box.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = spec.num_keypoints
    if keypoints.shape[0] != k or scores.shape[0] != k:
        raise ValueError(
            f"draw_pose: keypoints {keypoints.shape}, scores {scores.shape}; want ({k}, 2), ({k},)"
        )
    t = line_thickness(image) if thickness is None else max(1, int(thickness))
    anchor = None
    if box is not None:
        x, y, w, h = (float(v) for v in box)
        p1, p2 = (int(np.rint(x)), int(np.rint(y))), (int(np.rint(x + w)), int(np.rint(y + h)))
        cv2.rectangle(image, p1, p2, BOX, t, cv2.LINE_AA)
        anchor = p1
    shown = np.isfinite(keypoints).all(1) & (scores >= vis_thr)
    if anchor is None and shown.any():
        # keypoints is (K, 2): the corner has two coordinates.
        anchor = cast(tuple[int, int], tuple(int(v) for v in np.rint(keypoints[shown].min(0))))
    if label is not None and anchor is not None:
        draw_tag(image, label, anchor, t)
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


def draw_tag(image: np.ndarray, text: str, corner: tuple[int, int], thickness: int) -> None:
    """``text`` in black on a filled ``BOX``-coloured tag whose bottom-left is ``corner`` (moved
    inside the image when it would leave it); its size follows ``thickness``."""
    scale = 0.4 * thickness + 0.2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    height, width = image.shape[:2]
    x = int(min(max(corner[0], 0), max(width - tw - 2 * thickness, 0)))
    y = int(min(max(corner[1], th + base + 2 * thickness), height - 1))
    cv2.rectangle(image, (x, y - th - base - 2 * thickness), (x + tw + 2 * thickness, y), BOX, -1)
    cv2.putText(image, text, (x + thickness, y - base - thickness), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (0, 0, 0), thickness, cv2.LINE_AA)  # fmt: skip


GT_MARK = (0, 0, 255)  # red (BGR): the ground truth in heatmap panels
PEAK_MARK = (255, 255, 255)  # white: the prediction's maximum


def _heatmap_pixel_to_tile(
    xy: np.ndarray | Sequence[float], heatmap_wh: tuple[int, int], tile_wh: tuple[int, int]
) -> np.ndarray:
    """Heatmap pixel coordinates (centre of pixel j at x=j) -> tile pixel coordinates."""
    scale = np.array(tile_wh, dtype=np.float64) / np.array(heatmap_wh, dtype=np.float64)
    return (np.asarray(xy, dtype=np.float64) + 0.5) * scale - 0.5


def heatmap_panel(
    image: np.ndarray,
    heatmaps: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    names: Sequence[str] | None = None,
    rgb: bool = True,
    tile_width: int = 192,
) -> np.ndarray:
    """One training sample's heatmaps over its crop, one labelled tile per joint, as an RGB image.

    Args:
        image: (3, H, W) the network input crop in pixel units (0-255), channels in the pipeline's
            order (``rgb``: True for RGB, False for BGR).
        heatmaps: (K, h, w) predicted heatmaps (raw; negative values shown as 0).
        target: ground truth, (K, 2) dots (x, y) in heatmap pixels or (K, h, w) Gaussian heatmaps
            (marked at their maximum).
        weight: (K,) joint weights; a joint with weight 0 (unlabelled) gets no ground-truth mark.
        names: K joint names written on the tiles (default ``joint <k>``).
        tile_width: width of each tile in pixels (the height keeps the crop's aspect ratio), so
            that small heatmaps are readable.

    Returns (rows x cols tiles, H', W', 3) uint8 RGB: the first tile is the crop with every labelled
    joint marked, then one tile per joint: the crop in dimmed grey, the heatmap (scaled to its own
    maximum) over it in the JET colour map, the ground truth as a red ring and the predicted
    maximum as a white cross, the joint's name on top.
    """
    heatmaps = np.clip(np.asarray(heatmaps, dtype=np.float32), 0, None)
    k, h, w = heatmaps.shape
    target, weight = np.asarray(target, dtype=np.float64), np.asarray(weight).reshape(-1)
    names = list(names) if names is not None else [f"joint {j}" for j in range(k)]
    base = _crop_tile(image, rgb, int(tile_width))
    tile_h, tile_w = base.shape[:2]
    grey = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    dimmed = (grey.astype(np.float32) * 0.5).astype(np.uint8)
    if target.ndim == 2:
        gt = target[:, :2]
    else:  # Gaussian targets: the maximum of each
        flat = target.reshape(k, -1).argmax(1)
        gt = np.stack([flat % w, flat // w], 1).astype(np.float64)
    gt_tile = _heatmap_pixel_to_tile(gt, (w, h), (tile_w, tile_h))
    marks = _Marks(radius=max(3, tile_w // 40), font=max(0.35, tile_w / 480))
    shown = [weight[j] > 0 and bool(np.isfinite(gt_tile[j]).all()) for j in range(k)]

    tiles = [base.copy()]
    for j in range(k):
        if shown[j]:
            marks.ring(tiles[0], gt_tile[j])
    marks.label(tiles[0], "crop + ground truth")
    for j in range(k):
        tile = _joint_tile(heatmaps[j], dimmed, marks)
        if shown[j]:
            marks.ring(tile, gt_tile[j])
        marks.label(tile, names[j])
        tiles.append(tile)
    return _grid(tiles)


def _crop_tile(image: np.ndarray, rgb: bool, tile_w: int) -> np.ndarray:
    """The (3, H, W) crop as a BGR uint8 tile ``tile_w`` wide, its aspect ratio kept."""
    crop = np.ascontiguousarray(
        np.clip(np.asarray(image, dtype=np.float32), 0, 255).transpose(1, 2, 0)
    )
    crop = crop.astype(np.uint8)
    if rgb:
        crop = crop[..., ::-1]  # cv2 draws in BGR
    tile_h = max(1, round(tile_w * crop.shape[0] / crop.shape[1]))
    return cv2.resize(np.ascontiguousarray(crop), (tile_w, tile_h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class _Marks:
    """How the panel marks a tile: ring ``radius`` and label ``font`` scale, in tile pixels."""

    radius: int
    font: float

    def label(self, tile: np.ndarray, text: str) -> None:
        (tw, th), base_line = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.font, 1)
        cv2.rectangle(tile, (0, 0), (tw + 4, th + base_line + 4), (0, 0, 0), -1)
        cv2.putText(tile, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, self.font, (255, 255, 255),
                    1, cv2.LINE_AA)  # fmt: skip

    def ring(self, tile: np.ndarray, at: np.ndarray) -> None:
        centre = tuple(int(v) for v in np.rint(at))
        cv2.circle(tile, centre, self.radius, GT_MARK, max(1, self.radius // 3), cv2.LINE_AA)


def _joint_tile(heatmap: np.ndarray, dimmed: np.ndarray, marks: _Marks) -> np.ndarray:
    """One joint's (h, w) heatmap, scaled to its maximum, in JET over the dimmed crop, with a
    white cross at its maximum."""
    h, w = heatmap.shape
    tile_h, tile_w = dimmed.shape[:2]
    peak = float(heatmap.max())
    norm = heatmap / peak if peak > 0 else heatmap
    norm = cv2.resize(norm, (tile_w, tile_h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.75 * norm)[..., None]
    tile = (dimmed * (1 - alpha) + colour * alpha).astype(np.uint8)
    if peak > 0:
        y, x = divmod(int(heatmap.argmax()), w)
        px, py = (int(v) for v in np.rint(_heatmap_pixel_to_tile((x, y), (w, h), (tile_w, tile_h))))
        cv2.drawMarker(
            tile, (px, py), PEAK_MARK, cv2.MARKER_CROSS, 2 * marks.radius, 1, cv2.LINE_AA
        )
    return tile


def _grid(tiles: list[np.ndarray]) -> np.ndarray:
    """The tiles in a near-square grid on a grey ground, as an RGB image (TensorBoard's order)."""
    tile_h, tile_w = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    pad = 2
    panel = np.full((rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad, 3), 80, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
        panel[y0 : y0 + tile_h, x0 : x0 + tile_w] = tile
    return np.ascontiguousarray(panel[..., ::-1])
