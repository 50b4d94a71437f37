"""Top-down crop and augmentation pipeline with the official SimpleBaseline / HRNet semantics.

One person instance (image, keypoints in image pixels, centre/scale) becomes a network input and its
keypoints in input pixels. Training draws, in the official order and with the official defaults:
- half-body (prob 0.3 when more than 8 joints are labelled): upper body chosen when a standard normal
  draw is below 0.5 (about 69% of the time, the official quirk), box grown x1.5;
- scale: s * clip(N(0, 1) * 0.35 + 1, 0.65, 1.35);
- rotation: clip(N(0, 1) * 45, -90, 90) degrees with probability 0.6, else 0;
- horizontal flip with probability 0.5: x -> W - 1 - x (pixel centres), left/right pairs swapped,
  centre flipped likewise. The flip is folded into the crop matrix, so the full image is never copied;
  the crop equals the official "flip the image, then crop" up to cv2's 1/32-px fixed-point sampling
  (at most one grey level on well under 1% of the pixels).
Then ``cv2.warpAffine`` (bilinear) to the input size, optional photometric augmentation
(albumentations, on the crop) and the channel order (RGB, or BGR as the official ResNet configs fed).
The crop stays uint8: ``TopDownModel`` normalises on its device, so workers ship 4x less data. Randomness comes from the ``numpy.random.Generator`` passed in, so a dataset
can make every sample reproducible from (seed, epoch, index) whatever the number of workers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch

from posematch.data.boxes import PIXEL_STD, affine_matrix, apply_affine
from posematch.keypoints import KeypointSpec

# The largest image whose 4-channel copy is kept for the next one (bytes): 4 Mpx.
_KEEP_BYTES = 4 * 2**22
_blocks = threading.local()


def _four_channel_block(height: int, width: int) -> np.ndarray | None:
    """A (height, width, 4) uint8 array from a block kept per thread for the next image, or
    None (cv2 allocates) for images above ``_KEEP_BYTES``. On this VM a fresh 1 MB block costs
    ~1 ms of page faults per image, four times what the 4-channel warp saves."""
    size = height * width * 4
    if size > _KEEP_BYTES:
        return None
    block = getattr(_blocks, "block", None)
    if block is None or block.size < size:
        block = _blocks.block = np.empty(max(size, 2**20), dtype=np.uint8)
    return block[:size].reshape(height, width, 4)


@dataclass(frozen=True)
class CropResult:
    """One cropped instance.

    image: (3, H, W) uint8 in the configured channel order. keypoints: (K, 2) input pixels. visible: (K,) as given
    (after flip pairing). center, scale: the crop actually used (image pixels; units of 200 px).
    rotation: degrees. flipped: whether a horizontal flip was applied. inverse: (2, 3) float64 map from
    input pixels back to the original (unflipped) image pixels.
    """

    image: torch.Tensor
    keypoints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool
    inverse: np.ndarray


def flip_keypoints(
    keypoints: np.ndarray, visible: np.ndarray, width: int, spec: KeypointSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (K, 2) image-pixel keypoints in an image ``width`` px wide and swap left/right joints.

    As the official ``fliplr_joints``, coordinates of unlabelled joints are set to 0.
    """
    perm = spec.flip_permutation()
    flipped = keypoints[perm].copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    vis = visible[perm].copy()
    return flipped * (vis > 0)[:, None], vis


def half_body_box(
    keypoints: np.ndarray,
    visible: np.ndarray,
    spec: KeypointSpec,
    aspect_ratio: float,
    rng: np.random.Generator,
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre/scale around the upper or lower body's labelled joints (official half_body_transform)."""
    labelled = visible > 0
    upper_ids = np.zeros(len(visible), dtype=bool)
    upper_ids[list(spec.upper_body)] = True
    upper = keypoints[labelled & upper_ids]
    lower = keypoints[labelled & ~upper_ids]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    w, h = chosen.max(axis=0) - chosen.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w, h]) / PIXEL_STD * padding


@dataclass(frozen=True)
class Augmentation:
    """The training crop's random draws (the official SimpleBaseline / HRNet recipe by default).

    flip: random horizontal flip. half_body_prob: probability of the half-body crop (0.3), which
    needs more than ``half_body_min_joints`` labelled joints (8). scale_factor: ``sf`` of the random
    scale (0.35). rotation_factor: ``rf`` of the random rotation in degrees (45), applied with
    probability ``rotation_prob`` (0.6). photometric: an albumentations transform applied to the
    uint8 crop, or None; it sees the network's channel order (RGB is what albumentations' colour
    transforms assume).
    """

    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    photometric: Any = None


class TopDownPipeline:
    """Crop and augment one person instance; the crop stays uint8 (``TopDownModel`` normalises).

    Args:
        input_size: (width, height) of the network input in pixels.
        spec: keypoint description (flip pairs, upper body).
        train: draw augmentations; otherwise a plain crop.
        augmentation: the draws of a training crop: an ``Augmentation``, or a mapping of its fields
            (what a config gives: ``augmentation: {rotation_factor: 15}``); None: the official
            recipe.
        color: channel order fed to the network, ``"rgb"`` or ``"bgr"``.
        udp: unbiased (UDP) crop matrix instead of the official one.
    """

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        spec: KeypointSpec | None = None,
        train: bool = False,
        augmentation: Augmentation | Mapping[str, Any] | None = None,
        color: str = "rgb",
        udp: bool = False,
    ) -> None:
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color={color!r}: expected 'rgb' or 'bgr'")
        if spec is None:
            raise ValueError("spec: a KeypointSpec is required (flip pairs, upper body)")
        if augmentation is None:
            augmentation = Augmentation()
        elif not isinstance(augmentation, Augmentation):
            known = {f.name for f in fields(Augmentation)}
            unknown = sorted(set(augmentation) - known)
            if unknown:
                raise ValueError(
                    f"augmentation.{unknown[0]}: not an augmentation option ({', '.join(sorted(known))})"
                )
            augmentation = Augmentation(**augmentation)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.spec = spec
        self.train = train
        self.augmentation = augmentation
        self.color = color
        self.udp = udp

    def check_agrees_with(self, input_size: Sequence[int], udp: bool, owner: str = "codec") -> None:
        """ValueError unless ``owner`` (the codec's geometry) maps the crops this pipeline makes:
        the same input size and the same coordinate convention. UDP is unbiased only when crop
        and codec both use it; one without the other shifts every target by a fraction of a
        pixel, silently. Both follow ``data.udp`` and ``data.input_size`` in the configs."""
        size = (int(input_size[0]), int(input_size[1]))
        if size != self.input_size:
            raise ValueError(
                f"data.input_size: the pipeline crops {list(self.input_size)} but the {owner} "
                f"maps {list(size)}; set data.input_size (both follow it)"
            )
        if bool(udp) != bool(self.udp):
            raise ValueError(
                f"data.udp: the pipeline crops with udp={self.udp} but the {owner} maps with "
                f"udp={bool(udp)}; UDP is unbiased only when both use it: set data.udp (both "
                "follow it)"
            )

    def __call__(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        visible: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        rng: np.random.Generator | None = None,
        channels: str = "bgr",
    ) -> CropResult:
        """Crop one instance.

        Args:
            image: (H, W, 3) uint8, BGR as cv2.imread returns it (or as ``channels`` says).
            keypoints: (K, 2) image pixels. visible: (K,) (> 0 means labelled).
            center: (2,) image pixels. scale: (2,) units of 200 px.
            rng: source of the augmentation draws (required when ``train``).
            channels: the image's channel order, ``"bgr"`` or ``"rgb"``; a dataset that decodes
                straight into the network's order (``color``) saves the conversion of every crop.
        """
        if channels not in ("rgb", "bgr"):
            raise ValueError(f"channels={channels!r}: expected 'rgb' or 'bgr'")
        keypoints = np.asarray(keypoints, dtype=np.float64)
        visible = np.asarray(visible)
        center = np.array(center, dtype=np.float64)
        scale = np.array(scale, dtype=np.float64)
        rot, flipped = 0.0, False
        if self.train:
            if rng is None:
                raise ValueError("rng: a numpy Generator is required for training augmentation")
            keypoints, visible, center, scale, rot, flipped = self._draw(
                image.shape[1], keypoints, visible, center, scale, rng
            )

        # matrix/inverse relate the (possibly flipped) frame of keypoints and centre to the input.
        matrix = affine_matrix(center, scale, rot, self.input_size, udp=self.udp)
        inverse = cv2.invertAffineTransform(matrix)  # what affine_matrix(inverse=True) returns
        image_matrix = matrix
        if flipped:
            # Composition with the mirror x -> (W - 1) - x, written out (per-sample cost matters):
            # image_matrix = matrix o mirror, inverse = mirror o inverse.
            last = image.shape[1] - 1.0
            image_matrix = matrix.copy()
            image_matrix[:, 0] = -matrix[:, 0]
            image_matrix[:, 2] = matrix[:, 2] + last * matrix[:, 0]
            inverse[0] = -inverse[0]
            inverse[0, 2] += last
        crop = self._warp(image, image_matrix, channels)
        if self.train and self.augmentation.photometric is not None:
            crop = self.augmentation.photometric(image=np.ascontiguousarray(crop))["image"]
        return CropResult(
            image=self.to_tensor(crop, self.color),  # already in the network's order
            keypoints=apply_affine(keypoints, matrix),
            visible=visible,
            center=center,
            scale=scale,
            rotation=rot,
            flipped=flipped,
            inverse=inverse,
        )

    def _draw(
        self,
        width: int,
        keypoints: np.ndarray,
        visible: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, bool]:
        """The training augmentation's draws, in the official order: half body, scale, rotation
        (degrees), flip of an image ``width`` px wide. Returns the keypoints, visibility, centre
        and scale they give, the rotation and whether the instance was flipped."""
        aug = self.augmentation
        rot, flipped = 0.0, False
        if (visible > 0).sum() > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
            box = half_body_box(keypoints, visible, self.spec, self.aspect_ratio, rng)
            if box is not None:
                center, scale = box
        sf, rf = aug.scale_factor, aug.rotation_factor
        scale = scale * min(max(rng.standard_normal() * sf + 1, 1 - sf), 1 + sf)
        if rng.random() <= aug.rotation_prob:
            rot = float(min(max(rng.standard_normal() * rf, -rf * 2), rf * 2))
        if aug.flip and rng.random() <= 0.5:
            flipped = True
            keypoints, visible = flip_keypoints(keypoints, visible, width, self.spec)
            center[0] = width - center[0] - 1
        return keypoints, visible, center, scale, rot, flipped

    def _warp(self, image: np.ndarray, image_matrix: np.ndarray, channels: str) -> np.ndarray:
        """The (input h, input w, 3) uint8 crop in the network's channel order. OpenCV's bilinear
        warp has a vectorised path for 4-channel images and none for 3: the fourth channel (with
        the channel swap, when one is needed) costs one cvtColor pass and saves more than that in
        the warp (``scripts/bench_data.py`` times the pipeline); the three colour channels come
        out bit for bit the same as a 3-channel warp (tested)."""
        swap = channels != self.color
        four = cv2.cvtColor(
            image,
            cv2.COLOR_BGR2RGBA if swap else cv2.COLOR_BGR2BGRA,
            dst=_four_channel_block(image.shape[0], image.shape[1]),
        )
        return cv2.warpAffine(four, image_matrix, self.input_size, flags=cv2.INTER_LINEAR)[..., :3]

    def to_tensor(self, crop: np.ndarray, channels: str = "bgr") -> torch.Tensor:
        """(H, W, 3) uint8 in ``channels`` order -> (3, H, W) uint8 in the configured order (a
        view of ``crop`` when no swap is needed; strided crops stay strided)."""
        if channels != self.color:  # the swap is its own inverse
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        return torch.from_numpy(crop).permute(2, 0, 1)
