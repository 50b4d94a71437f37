"""The embedded synthetic dataset: articulated stick-and-silhouette people, written in COCO format.

``generate(out_dir, num_train, num_val, seed, num_test=0, num_pretrain=0)`` (or ``python -m
posematch.data.synthetic --out DIR --train N --val M [--test T] [--pretrain P] [--seed S]``) writes
the COCO person-keypoint layout (Lin et al. 2014)::

    DIR/annotations/person_keypoints_train2017.json   DIR/train2017/000000000001.jpg ...
    DIR/annotations/person_keypoints_val2017.json     DIR/val2017/000000000001.jpg ...
    DIR/annotations/person_keypoints_test2017.json    DIR/test2017/...      (held out, optional)
    DIR/annotations/person_keypoints_pretrain2017.json DIR/pretrain2017/... (optional)

Each split is its own independent draw (its own seed stream): ``test`` is the held-out split that
no choice may look at; ``pretrain`` is a separate split for pretraining a backbone, standing in for
ImageNet in the paper's protocol.

which pycocotools reads and ``COCOeval(iouType="keypoints")`` scores. Each image (256-320 px a side)
holds 1-3 frontal figures with the 17 COCO joints (``posematch.keypoints.COCO``): limb lengths in
human proportions of the figure height (70-220 px), random joint angles, colours and limb thickness,
the person's left limbs lighter and on the image's right, the right limbs darker, on a textured
background (gradient or smooth noise, blurred shapes, sensor noise), saved as JPEG (quality 90).

Units and conventions:
- Coordinates are image pixels with pixel (row i, col j) centred at (x=j, y=i); keypoints are floats
  rounded to 0.01 px and the figures are drawn at 1/16 px precision (cv2 ``shift=4``, anti-aliased).
- Visibility: 2 visible; 1 labelled but covered by a later-drawn figure or by an occluder (the pixel
  holding the joint, ``floor(x + 0.5), floor(y + 0.5)``); 0 outside the image, i.e. in no pixel
  (outside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``), stored as ``x = y = v = 0`` as COCO does.
- ``bbox = [x, y, w, h]``: first column and row of the figure's whole drawn silhouette (occluded parts
  included) clipped to the image, and its width and height in pixels (so ``x + w - 1`` is the last
  column, the convention of the official COCO loaders). ``area``: number of silhouette pixels in the
  image, the segmentation area COCO's OKS uses. ``num_keypoints``: joints with ``v > 0``.
- A figure with fewer than 3 labelled joints or a box under 12 px is re-placed, never drawn unlabelled.

Every image depends only on ``(seed, split, index)`` (a ``numpy`` Generator each), so the output is
byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posematch.keypoints import COCO as COCO_SPEC

Colour = tuple[int, int, int]

# name -> (folder, seed stream); the stream keeps every split an independent draw for one seed.
SPLITS = {
    "train": ("train2017", 0),
    "val": ("val2017", 1),
    "test": ("test2017", 2),
    "pretrain": ("pretrain2017", 3),
}
SHIFT = 4  # cv2 fixed-point bits: drawing precision 1/16 px
ONE = 1 << SHIFT

(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST,
 L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE) = range(17)  # fmt: skip


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator draws. Sizes in pixels, probabilities in [0, 1].

    image_size: (min, max) width and height of an image, drawn independently.
    figure_height: (min, max) figure height (head top to ankle, upright).
    max_figures: figures per image are 1..max_figures.
    truncation_prob: chance that a figure may be placed partly outside the image.
    occluder_prob: chance that an image gets 1-2 occluders over its figures.
    min_labelled: fewest joints inside the image for a figure to be kept.
    min_box: smallest box side of a kept figure.
    max_overlap: largest fraction of an earlier figure's silhouette a later one may cover.
    jpeg_quality: cv2 JPEG quality.
    """

    image_size: tuple[int, int] = (256, 320)
    figure_height: tuple[float, float] = (70.0, 220.0)
    max_figures: int = 3
    truncation_prob: float = 0.25
    occluder_prob: float = 0.4
    min_labelled: int = 3
    min_box: int = 12
    max_overlap: float = 0.3
    jpeg_quality: int = 90


# Segment lengths as fractions of the figure height H (adult proportions, Drillis & Contini 1966,
# rounded): ankle-knee 0.235 + knee-hip 0.245 + hip-shoulder 0.30 + neck 0.045 + head 0.13 ~ H.
TORSO, SHOULDER_WIDTH, HIP_WIDTH = 0.30, 0.22, 0.15
UPPER_ARM, FOREARM, THIGH, SHANK = 0.17, 0.15, 0.245, 0.235
NECK, HEAD_RX, HEAD_RY = 0.045, 0.05, 0.065
FORESHORTENING = (0.8, 1.0)  # per-segment factor: the limb leaves the image plane a little


@dataclass(frozen=True)
class Primitive:
    """One cv2 drawing call in image pixels.

    kind: ``line`` (points (2, 2), size = thickness px), ``circle`` (points (1, 2), size = radius px),
    ``ellipse`` (points (1, 2) centre, axes = semi-axes px, angle in degrees) or ``poly`` (points
    (n, 2), filled, with a 2-px border in ``edge`` colour).
    """

    kind: str
    colour: Colour
    points: np.ndarray
    size: float = 0.0
    axes: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    edge: Colour = (0, 0, 0)


@dataclass(frozen=True)
class Person:
    """A labelled figure of one image.

    keypoints: (17, 2) image px, rounded to 0.01; joints outside the image keep their coordinates
    here (the JSON writes them as 0, 0, 0). visible: (17,) COCO flags 0/1/2. bbox: [x, y, w, h] px.
    area: silhouette pixels inside the image.
    """

    keypoints: np.ndarray
    visible: np.ndarray
    bbox: tuple[int, int, int, int]
    area: int


@dataclass(frozen=True)
class _Figure:
    """A posed and placed figure, before labelling: what to draw and where it lies."""

    keypoints: np.ndarray  # (17, 2) image px, rounded to 0.01
    primitives: list[Primitive]
    mask: np.ndarray  # (H, W) uint8 silhouette, 255 inside


# ---------------------------------------------------------------------------------------------------
# Pose


def _rotate(v: np.ndarray, degrees: float) -> np.ndarray:
    """v (2,) rotated by an angle in degrees (clockwise on screen, since y points down)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb_direction(up: np.ndarray, left: np.ndarray, degrees: float, side: int) -> np.ndarray:
    """Unit direction at ``degrees`` from straight down, positive away from the body on ``side``
    (+1 the person's left, -1 the right): 0 hangs down, 90 points sideways, 180 points up."""
    a = math.radians(degrees)
    return -up * math.cos(a) + side * left * math.sin(a)


def _limb_angles(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Joint angles in degrees from straight down: (upper arm, forearm, thigh, shank)."""
    upper_arm = rng.uniform(-20.0, 170.0)
    # The forearm bends from the upper arm outwards (hands up) or inwards across the body.
    forearm = upper_arm + rng.uniform(-110.0, 130.0)
    if rng.random() < 0.12:  # knee lifted sideways, shank hanging
        thigh, shank = rng.uniform(35.0, 80.0), rng.uniform(-10.0, 25.0)
    else:
        thigh = rng.uniform(-10.0, 35.0)
        shank = min(max(thigh + rng.uniform(-35.0, 15.0), -25.0), 60.0)
    return upper_arm, forearm, thigh, shank


def _pose(rng: np.random.Generator, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (17, 2) in pixels relative to the hip centre, and (up, left) unit vectors of the
    head, for a frontal figure ``height`` px tall (the person's left on the image's right)."""
    lean = min(max(rng.normal(0.0, 8.0), -25.0), 25.0)
    up = _rotate(np.array([0.0, -1.0]), lean)
    left = _rotate(np.array([1.0, 0.0]), lean)
    kp = np.zeros((17, 2))
    neck = up * TORSO * height
    for side, sh, el, wr, hip, kn, an in (
        (1, L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE),
        (-1, R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE),
    ):
        a_upper, a_fore, a_thigh, a_shank = _limb_angles(rng)
        f = rng.uniform(*FORESHORTENING, size=4)
        kp[sh] = neck + side * left * SHOULDER_WIDTH * height / 2
        kp[el] = kp[sh] + _limb_direction(up, left, a_upper, side) * UPPER_ARM * height * f[0]
        kp[wr] = kp[el] + _limb_direction(up, left, a_fore, side) * FOREARM * height * f[1]
        kp[hip] = side * left * HIP_WIDTH * height / 2
        kp[kn] = kp[hip] + _limb_direction(up, left, a_thigh, side) * THIGH * height * f[2]
        kp[an] = kp[kn] + _limb_direction(up, left, a_shank, side) * SHANK * height * f[3]
    head_up = _rotate(up, rng.uniform(-15.0, 15.0))
    head_left = np.array([-head_up[1], head_up[0]])
    centre = neck + head_up * (NECK + HEAD_RY) * height
    yaw = rng.uniform(-0.5, 0.5)  # turns the face a little: nose and eyes slide sideways
    kp[NOSE] = centre - head_up * 0.015 * height + head_left * 0.02 * yaw * height
    for side, eye, ear in ((1, L_EYE, L_EAR), (-1, R_EYE, R_EAR)):
        kp[eye] = (
            centre + head_up * 0.012 * height + head_left * (side * 0.021 + 0.015 * yaw) * height
        )
        kp[ear] = centre - head_up * 0.005 * height + head_left * side * 0.97 * HEAD_RX * height
    return kp, np.stack([head_up, head_left])


# ---------------------------------------------------------------------------------------------------
# Colours


def _hsv(h: float, s: float, v: float) -> Colour:
    """BGR colour (0-255 ints) from hue, saturation, value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(b * 255), round(g * 255), round(r * 255))


def _mix(c: Colour, target: float, t: float) -> Colour:
    """c moved a fraction t towards the grey level ``target`` (0 black, 255 white)."""
    return (
        round(c[0] + (target - c[0]) * t),
        round(c[1] + (target - c[1]) * t),
        round(c[2] + (target - c[2]) * t),
    )


def _palette(rng: np.random.Generator, outline: Colour) -> dict[str, Colour]:
    """Colours of one figure: left parts lighter, right parts darker than their base colour."""
    shirt = _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 0.95))
    trousers = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.35, 0.85))
    skin = _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
    return {
        "shirt": shirt,
        "arm_l": _mix(shirt, 255, 0.45),
        "arm_r": _mix(shirt, 0, 0.45),
        "leg_l": _mix(trousers, 255, 0.45),
        "leg_r": _mix(trousers, 0, 0.45),
        "skin": skin,
        "ear_l": _mix(skin, 255, 0.35),
        "ear_r": _mix(skin, 0, 0.35),
        "nose": _mix((40, 40, 170), skin[0], 0.3),
        "eye": (25, 20, 20),
        "hair": _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.45)),
        "shoe": _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.05, 0.3)),
        "outline": outline,
    }


# ---------------------------------------------------------------------------------------------------
# Figure primitives


def _limb(
    points: Sequence[np.ndarray], thickness: int, colour: Colour, joint: Colour, outline: Colour
) -> list[Primitive]:
    """A two-segment limb: outline, fill, and a disc marking the middle joint (elbow / knee)."""
    segments = [np.stack([points[0], points[1]]), np.stack([points[1], points[2]])]
    prims = [Primitive("line", outline, s, thickness + 2) for s in segments]
    prims += [Primitive("line", colour, s, thickness) for s in segments]
    prims.append(Primitive("circle", joint, points[1][None], max(1.0, 0.35 * thickness)))
    return prims


def _legs(
    kp: np.ndarray, up: np.ndarray, h: float, t: int, pal: dict[str, Colour]
) -> list[Primitive]:
    """Thighs, shanks, knees and feet of both legs."""
    prims: list[Primitive] = []
    for side, hip, knee, ankle, key in (
        (1, L_HIP, L_KNEE, L_ANKLE, "leg_l"),
        (-1, R_HIP, R_KNEE, R_ANKLE, "leg_r"),
    ):
        joint = _mix(pal[key], 0, 0.3)
        prims += _limb((kp[hip], kp[knee], kp[ankle]), t, pal[key], joint, pal["outline"])
        left = np.array([-up[1], up[0]])  # frontal view: feet point down and a little outwards
        toe = kp[ankle] - up * 0.035 * h + side * left * 0.025 * h
        prims.append(Primitive("line", pal["shoe"], np.stack([kp[ankle], toe]), max(2, t - 1)))
    return prims


def _torso(
    kp: np.ndarray, up: np.ndarray, arm_t: int, leg_t: int, pal: dict[str, Colour]
) -> list[Primitive]:
    """Filled quadrilateral from shoulder to hip, widened by half a limb so the limbs attach."""
    sl = kp[L_SHOULDER] - kp[R_SHOULDER]
    sl = sl / max(float(np.linalg.norm(sl)), 1e-6)
    hl = kp[L_HIP] - kp[R_HIP]
    hl = hl / max(float(np.linalg.norm(hl)), 1e-6)
    a, g = arm_t / 2, leg_t / 2
    quad = np.stack([
        kp[L_SHOULDER] + sl * a + up * a * 0.6,
        kp[R_SHOULDER] - sl * a + up * a * 0.6,
        kp[R_HIP] - hl * g - up * g * 0.6,
        kp[L_HIP] + hl * g - up * g * 0.6,
    ])  # fmt: skip
    return [Primitive("poly", pal["shirt"], quad, edge=pal["outline"])]


def _head(
    kp: np.ndarray, head_axes: np.ndarray, h: float, pal: dict[str, Colour]
) -> list[Primitive]:
    """Neck, hair, ears, face ellipse, eyes and nose."""
    head_up, head_left = head_axes
    neck = (kp[L_SHOULDER] + kp[R_SHOULDER]) / 2
    centre = (kp[L_EAR] + kp[R_EAR]) / 2 + head_up * 0.005 * h
    angle = math.degrees(math.atan2(head_left[1], head_left[0]))
    rx, ry = HEAD_RX * h, HEAD_RY * h
    hair_c = centre + head_up * 0.012 * h
    prims = [
        Primitive("line", pal["outline"], np.stack([neck, centre]), max(3, round(0.05 * h) + 2)),
        Primitive("line", pal["skin"], np.stack([neck, centre]), max(2, round(0.05 * h))),
        Primitive("ellipse", pal["hair"], hair_c[None], axes=(rx * 1.06, ry * 1.02), angle=angle),
        Primitive("circle", pal["ear_l"], kp[L_EAR][None], max(1.5, 0.02 * h)),
        Primitive("circle", pal["ear_r"], kp[R_EAR][None], max(1.5, 0.02 * h)),
        Primitive("ellipse", pal["skin"], centre[None], axes=(rx, ry * 0.92), angle=angle),
        Primitive("circle", pal["eye"], kp[L_EYE][None], max(0.8, 0.009 * h)),
        Primitive("circle", pal["eye"], kp[R_EYE][None], max(0.8, 0.009 * h)),
        Primitive("circle", pal["nose"], kp[NOSE][None], max(0.8, 0.011 * h)),
    ]
    return prims


def _arms(kp: np.ndarray, h: float, t: int, pal: dict[str, Colour]) -> list[Primitive]:
    """Upper arms, forearms, elbows and hands; drawn last so an arm across the body shows."""
    prims: list[Primitive] = []
    for sh, el, wr, key in (
        (L_SHOULDER, L_ELBOW, L_WRIST, "arm_l"),
        (R_SHOULDER, R_ELBOW, R_WRIST, "arm_r"),
    ):
        joint = _mix(pal[key], 0, 0.3)
        prims += _limb((kp[sh], kp[el], kp[wr]), t, pal[key], joint, pal["outline"])
        d = kp[wr] - kp[el]
        d = d / max(float(np.linalg.norm(d)), 1e-6)
        # The hand sits beyond the wrist, so the wrist is the sleeve/skin boundary.
        hand = kp[wr] + d * 0.025 * h
        prims.append(Primitive("circle", pal["skin"], hand[None], max(1.5, 0.03 * h)))
    return prims


def _figure_primitives(
    kp: np.ndarray,
    head_axes: np.ndarray,
    height: float,
    pal: dict[str, Colour],
    rng: np.random.Generator,
) -> list[Primitive]:
    """All drawing calls of one figure, back to front: legs, torso, head, arms."""
    arm_t = max(3, round(height * rng.uniform(0.045, 0.065)))
    leg_t = max(4, round(height * rng.uniform(0.06, 0.085)))
    up = (kp[L_SHOULDER] + kp[R_SHOULDER] - kp[L_HIP] - kp[R_HIP]) / 2
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    return (
        _legs(kp, up, height, leg_t, pal)
        + _torso(kp, up, arm_t, leg_t, pal)
        + _head(kp, head_axes, height, pal)
        + _arms(kp, height, arm_t, pal)
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
            pts = np.round(p.points * ONE).astype(np.int32)[None]
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
    seed: int, split: str, index: int, cfg: SyntheticConfig = SyntheticConfig()
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


# ---------------------------------------------------------------------------------------------------
# Dataset files


def _annotation(person: Person, ann_id: int, image_id: int) -> dict[str, Any]:
    """COCO keypoint annotation of a person (outside joints written as 0, 0, 0)."""
    flat: list[float | int] = []
    for (x, y), v in zip(person.keypoints.tolist(), person.visible.tolist(), strict=True):
        flat += [round(x, 2), round(y, 2), v] if v > 0 else [0, 0, 0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": list(person.bbox),
        "area": person.area,
        "iscrowd": 0,
        "keypoints": flat,
        "num_keypoints": int((person.visible > 0).sum()),
        "segmentation": [],
    }


Job = tuple[int, str, int, str, SyntheticConfig]  # seed, split, index, image path, config


def _write_image(args: Job) -> tuple[int, int, list[Person]]:
    """Worker: synthesize one image, write it as JPEG; return (width, height, people)."""
    seed, split, index, path, cfg = args
    image, people = synthesize(seed, split, index, cfg)
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise OSError(f"cannot write image {path}")
    return image.shape[1], image.shape[0], people


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe


def _categories() -> list[dict[str, Any]]:
    """The COCO person category with its 17 keypoint names and 1-based skeleton."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_SPEC.names),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_SPEC.skeleton],
        }
    ]


def _run_jobs(jobs: list[Job], workers: int) -> list[tuple[int, int, list[Person]]]:
    """``_write_image`` over the jobs, in order, in ``workers`` processes (1: in this process)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_write_image(job) for job in jobs]
    # spawn, not fork: a forked child can inherit cv2's thread pool mid-lock and hang.
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return pool.map(_write_image, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


def _write_annotations(
    out: Path, split: str, seed: int, names: list[str], results: list[tuple[int, int, list[Person]]]
) -> None:
    """``annotations/person_keypoints_{split}2017.json`` from the written images' people."""
    images, annotations = [], []
    for i, (width, height, people) in enumerate(results):
        images.append({"id": i + 1, "file_name": names[i], "width": width, "height": height})
        for person in people:
            annotations.append(_annotation(person, len(annotations) + 1, i + 1))
    dataset = {
        "info": {"description": f"posematch synthetic people, seed {seed}", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with open(out / "annotations" / f"person_keypoints_{SPLITS[split][0]}.json", "w") as f:
        json.dump(dataset, f, separators=(",", ":"))


def generate(
    out_dir: str | os.PathLike[str],
    num_train: int,
    num_val: int,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),
    workers: int | None = None,
    num_test: int = 0,
    num_pretrain: int = 0,
) -> Path:
    """Write the synthetic dataset in COCO layout under ``out_dir`` and return its path.

    Args:
        out_dir: dataset root (created; existing files of the same names are overwritten).
        num_train: images in ``train2017``.
        num_val: images in ``val2017``.
        seed: the output is a function of the seed (and config) only.
        config: what to draw.
        workers: processes (default: all CPUs); does not change the output.
        num_test: images in ``test2017`` (held-out split; none written when 0).
        num_pretrain: images in ``pretrain2017`` (backbone pretraining split; none when 0).
    """
    counts = {"train": num_train, "val": num_val, "test": num_test, "pretrain": num_pretrain}
    if min(counts.values()) < 0:
        raise ValueError(f"image counts must be >= 0, got {counts}")
    out = Path(out_dir)
    # train and val are always written (possibly empty); the optional splits only when asked for.
    counts = {k: n for k, n in counts.items() if n > 0 or k in ("train", "val")}
    names = {split: [f"{i + 1:012d}.jpg" for i in range(n)] for split, n in counts.items()}
    jobs: list[Job] = []
    for split, n in counts.items():
        folder = out / SPLITS[split][0]
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [(seed, split, i, str(folder / names[split][i]), config) for i in range(n)]
    results = _run_jobs(jobs, workers or os.cpu_count() or 1)
    start = 0
    for split, n in counts.items():
        _write_annotations(out, split, seed, names[split], results[start : start + n])
        start += n
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m posematch.data.synthetic --out DIR --train N --val M [--test T]
    [--pretrain P] [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset root, e.g. data/synthetic")
    parser.add_argument("--train", type=int, required=True, help="number of training images")
    parser.add_argument("--val", type=int, required=True, help="number of validation images")
    parser.add_argument("--test", type=int, default=0, help="held-out test images (default 0)")
    parser.add_argument("--pretrain", type=int, default=0, help="pretraining images (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate(
        args.out,
        args.train,
        args.val,
        args.seed,
        workers=args.workers,
        num_test=args.test,
        num_pretrain=args.pretrain,
    )
    print(
        f"wrote {args.train} train + {args.val} val + {args.test} test + {args.pretrain} pretrain "
        f"images to {out} "
        f"in {time.perf_counter() - start:.1f} s (seed {args.seed})"
    )


if __name__ == "__main__":
    main()
