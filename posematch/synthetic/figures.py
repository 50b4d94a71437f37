"""The synthetic figures: their configuration, joint layout, pose, colours and the cv2 drawing
primitives of a figure (``posematch.synthetic``). Image pixels, pixel centres at integers."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


DEFAULT_CONFIG = SyntheticConfig()  # frozen: one shared default


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
