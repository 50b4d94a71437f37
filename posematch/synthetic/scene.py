"""One synthetic image: background, figure placement (truncation, overlap, occluders), rendering
at 1/16 px and the labels (visibility from what covers each joint, box, area)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import cv2
import numpy as np

from posematch.synthetic.figures import (
    DEFAULT_CONFIG,
    ONE,
    SHIFT,
    SPLITS,
    Colour,
    Person,
    Primitive,
    SyntheticConfig,
    _Figure,
    _figure_primitives,
    _palette,
    _pose,
)

# ---------------------------------------------------------------------------------------------------
# Rendering


def _fixed(p: np.ndarray) -> tuple[int, int]:
    """A point in pixels as cv2 fixed-point integers (``shift=SHIFT``)."""
    return (round(float(p[0]) * ONE), round(float(p[1]) * ONE))


def _render(canvas: np.ndarray, prims: Sequence[Primitive], value: int | None = None) -> None:
    """Draw primitives in place: in their colours, anti-aliased (``value`` None) on a BGR image, or
    all in ``value`` without anti-aliasing on a single-channel mask."""
    line_type = cv2.LINE_AA if value is None else cv2.LINE_8
    for p in prims:
        colour = p.colour if value is None else value
        if p.kind == "line":
            a, b = _fixed(p.points[0]), _fixed(p.points[1])
            cv2.line(canvas, a, b, colour, int(p.size), line_type, SHIFT)
        elif p.kind == "circle":
            r = round(p.size * ONE)
            cv2.circle(canvas, _fixed(p.points[0]), r, colour, -1, line_type, SHIFT)
        elif p.kind == "ellipse":
            axes = (round(p.axes[0] * ONE), round(p.axes[1] * ONE))
            c = _fixed(p.points[0])
            cv2.ellipse(canvas, c, axes, p.angle, 0, 360, colour, -1, line_type, SHIFT)
        else:
            # (1, N, 2): an array of one polygon, which cv2 reads as a sequence of polygons.
            pts = cast(Sequence[np.ndarray], np.round(p.points * ONE).astype(np.int32)[None])
            cv2.fillPoly(canvas, pts, colour, line_type, SHIFT)
            edge = p.edge if value is None else value
            cv2.polylines(canvas, pts, True, edge, 2, line_type, SHIFT)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 BGR texture: a gradient or smooth noise, blurred random shapes."""
    if rng.random() < 0.5:
        c0, c1 = rng.uniform(20, 235, size=(2, 3))
        a = rng.uniform(0, 2 * math.pi)
        xs = np.arange(w, dtype=np.float32)[None]
        ys = np.arange(h, dtype=np.float32)[:, None]
        t = xs * math.cos(a) + ys * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = cv2.merge([(c0[k] + (c1[k] - c0[k]) * t).astype(np.uint8) for k in range(3)])
    else:
        cells = rng.uniform(20, 235, size=(int(rng.integers(2, 8)), int(rng.integers(2, 8)), 3))
        img = cv2.resize(cells.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 14))):
        _random_shape(rng, img)
    if rng.random() < 0.7:  # out-of-focus background: the figures stay the sharpest things
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 3.0))
    return img


def _random_shape(rng: np.random.Generator, img: np.ndarray) -> None:
    """A random filled rectangle, circle or thick line on the background, in place."""
    h, w = img.shape[:2]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    size = int(rng.integers(8, max(w, h) // 3))
    kind = rng.integers(0, 3)
    if kind == 0:
        cv2.rectangle(img, (x, y), (x + size, y + int(rng.integers(8, size + 9))), colour, -1)
    elif kind == 1:
        cv2.circle(img, (x, y), size // 2, colour, -1, cv2.LINE_AA)
    else:
        x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(img, (x, y), (x2, y2), colour, int(rng.integers(1, 6)), cv2.LINE_AA)


def _outline_colour(background: np.ndarray, kp: np.ndarray) -> Colour:
    """Dark outline on a light background and a light one on a dark background, around the figure."""
    h, w = background.shape[:2]
    x0, y0 = np.clip(np.floor(kp.min(0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(kp.max(0)).astype(int) + 1, [x0 + 1, y0 + 1], [w, h])
    luminance = float(background[y0:y1, x0:x1].mean())
    return (25, 25, 25) if luminance > 110 else (230, 230, 230)


# ---------------------------------------------------------------------------------------------------
# Placement


def _offset_range(lo: float, hi: float, size: int, slack: float) -> tuple[float, float]:
    """Range of offsets putting [lo, hi] inside [0, size - 1], allowing ``slack`` px outside."""
    a, b = -lo - slack, size - 1 - hi + slack
    return (a, b) if a <= b else ((a + b) / 2, (a + b) / 2)


def _sample_figure(
    rng: np.random.Generator, image: np.ndarray, cfg: SyntheticConfig, truncate: bool
) -> _Figure:
    """One posed, coloured and placed figure with its silhouette mask (not drawn yet)."""
    h, w = image.shape[:2]
    height = rng.uniform(*cfg.figure_height)
    local, head_axes = _pose(rng, height)
    margin = 0.12 * height  # head, hands and feet reach beyond the extreme joints
    lo, hi = local.min(0) - margin, local.max(0) + margin
    slack = 0.4 * (hi - lo) if truncate else np.zeros(2)
    ox = rng.uniform(*_offset_range(lo[0], hi[0], w, slack[0]))
    oy = rng.uniform(*_offset_range(lo[1], hi[1], h, slack[1]))
    kp = np.round(local + np.array([ox, oy]), 2)
    pal = _palette(rng, _outline_colour(image, kp))
    prims = _figure_primitives(kp, head_axes, height, pal, rng)
    mask = np.zeros((h, w), np.uint8)
    _render(mask, prims, 255)
    return _Figure(kp, prims, mask)


def _inside(kp: np.ndarray, h: int, w: int) -> np.ndarray:
    """(K,) bool: the point falls in an image pixel, [-0.5, w - 0.5) x [-0.5, h - 0.5)."""
    x, y = kp[:, 0], kp[:, 1]
    return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """[x, y, w, h] of the nonzero pixels of a mask (first column/row, size in pixels)."""
    x, y, bw, bh = cv2.boundingRect(mask)
    return (x, y, bw, bh)


def _acceptable(fig: _Figure, placed: Sequence[_Figure], cfg: SyntheticConfig) -> bool:
    """Enough joints and box to label, and it hides no earlier figure too much."""
    h, w = fig.mask.shape
    if int(_inside(fig.keypoints, h, w).sum()) < cfg.min_labelled:
        return False
    _, _, bw, bh = _box(fig.mask)
    if min(bw, bh) < cfg.min_box:
        return False
    for other in placed:
        covered = np.count_nonzero(other.mask & fig.mask)
        if covered > cfg.max_overlap * np.count_nonzero(other.mask):
            return False
    return True


def _place_figures(
    rng: np.random.Generator, image: np.ndarray, cfg: SyntheticConfig
) -> list[_Figure]:
    """1..max_figures figures in drawing order; a figure that fails 10 placements is dropped."""
    placed: list[_Figure] = []
    for _ in range(int(rng.integers(1, cfg.max_figures + 1))):
        truncate = bool(rng.random() < cfg.truncation_prob)
        for _attempt in range(10):
            fig = _sample_figure(rng, image, cfg, truncate)
            if _acceptable(fig, placed, cfg):
                placed.append(fig)
                break
    return placed


def _occluders(
    rng: np.random.Generator, image: np.ndarray, figures: Sequence[_Figure]
) -> np.ndarray:
    """Draw 1-2 striped occluders over random joints of the figures, in place; their (H, W) mask."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        fig = figures[int(rng.integers(0, len(figures)))]
        fig_h = float(np.ptp(fig.keypoints[:, 1])) + 1.0
        centre = fig.keypoints[int(rng.integers(0, 17))] + rng.normal(0.0, 0.05 * fig_h, size=2)
        axes = rng.uniform(0.08, 0.2, size=2) * max(fig_h, 40.0)
        shape = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            c = _fixed(centre)
            a = (round(axes[0] * ONE), round(axes[1] * ONE))
            cv2.ellipse(shape, c, a, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_8, SHIFT)
        else:
            box = cv2.boxPoints(
                ((centre[0], centre[1]), (2 * axes[0], 2 * axes[1]), rng.uniform(0, 90))
            )
            cv2.fillPoly(shape, [np.round(box * ONE).astype(np.int32)], 255, cv2.LINE_8, SHIFT)
        _paint_texture(rng, image, shape)
        mask |= shape
    return mask


def _paint_texture(rng: np.random.Generator, image: np.ndarray, shape: np.ndarray) -> None:
    """Fill the mask's pixels of the image with two-colour stripes, in place."""
    c0, c1 = rng.integers(0, 256, size=(2, 3)).astype(np.uint8)
    a = rng.uniform(0, math.pi)
    period = rng.uniform(4.0, 14.0)
    x, y, w, h = cv2.boundingRect(shape)  # only the occluder's box: the image is mostly untouched
    ys, xs = np.mgrid[y : y + h, x : x + w].astype(np.float32)
    stripes = np.sin((xs * math.cos(a) + ys * math.sin(a)) * (2 * math.pi / period)) > 0
    inside = shape[y : y + h, x : x + w] > 0
    roi = image[y : y + h, x : x + w]
    roi[inside & stripes] = c0
    roi[inside & ~stripes] = c1


# ---------------------------------------------------------------------------------------------------
# One image


def synthesize(
    seed: int, split: str, index: int, cfg: SyntheticConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, list[Person]]:
    """Image ``index`` of ``split`` for ``seed``: (H, W, 3) uint8 BGR image and its labelled people.

    ``Person.keypoints`` keep the coordinates of joints outside the image (the JSON zeroes them).
    """
    rng = np.random.default_rng([seed, SPLITS[split][1], index])
    w, h = (int(v) for v in rng.integers(cfg.image_size[0], cfg.image_size[1] + 1, size=2))
    image = _background(rng, h, w)
    figures = _place_figures(rng, image, cfg)
    for fig in figures:
        _render(image, fig.primitives)
    cover = np.zeros((h, w), np.uint8)
    if figures and rng.random() < cfg.occluder_prob:
        cover = _occluders(rng, image, figures)
    image = _sensor_noise(rng, image)
    people = []
    for i in range(len(figures) - 1, -1, -1):  # back to front of the drawing order
        people.append(_label(figures[i], cover))
        cover = cover | figures[i].mask
    return image, people[::-1]


def _sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The image plus uniform integer noise of +-0..8 grey levels per pixel and channel, saturated."""
    amplitude = int(rng.integers(0, 9))
    noise = rng.integers(-amplitude, amplitude + 1, size=image.shape, dtype=np.int16)
    return cv2.add(image, noise, dtype=cv2.CV_8U)


def _label(fig: _Figure, cover: np.ndarray) -> Person:
    """Visibility, box and area of a figure given the mask of everything drawn over it."""
    h, w = cover.shape
    inside = _inside(fig.keypoints, h, w)
    cols = np.clip(np.floor(fig.keypoints[:, 0] + 0.5).astype(int), 0, w - 1)
    rows = np.clip(np.floor(fig.keypoints[:, 1] + 0.5).astype(int), 0, h - 1)
    hidden = cover[rows, cols] > 0
    visible = np.where(inside, np.where(hidden, 1, 2), 0).astype(np.int64)
    return Person(fig.keypoints, visible, _box(fig.mask), int(np.count_nonzero(fig.mask)))
