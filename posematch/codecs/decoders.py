"""Heatmap decoders: (B, K, h, w) heatmaps -> (B, K, 2) keypoints in heatmap pixels + (B, K) scores.

Every decoder scores a joint with the maximum of its raw heatmap (the convention of the official
SimpleBaseline / HRNet / DARK code, which the COCO rescoring step expects). The window decoder can
instead score with the share of the heatmap's mass inside its window (``score="mass"``): a heatmap
trained with the matching loss has no fixed scale (relu(H) is normalised), so its maximum says little
about confidence, while the mass share is in [0, 1] for any scale.

- ``window`` (Qu et al., NeurIPS 2022, Sec. 3.3): the 2x2 window of adjacent pixels whose relu-mass
  is largest; the keypoint is the mean of its 4 pixel centres weighted by their normalised masses.
  A heatmap with no positive value returns the centre of the first window. A 1-pixel-wide or -high
  heatmap uses 2x1 / 1x2 / 1x1 windows.
- ``argmax`` (SimpleBaseline / HRNet ``get_final_preds``): the arg-max pixel, moved 0.25 px toward
  the larger neighbour along x and along y. As in the official code the shift is applied only when
  1 < x < w - 1 and 1 < y < h - 1, and a joint whose maximum is <= 0 is placed at (0, 0).
- ``dark`` (Zhang et al., CVPR 2020, official ``get_final_preds``): blur with a ``blur_kernel`` Gaussian
  (cv2.GaussianBlur semantics, zero border, rescaled to keep the maximum), take log(max(., 1e-10)),
  and refine the arg-max by one Newton step on the second-order Taylor expansion (central
  differences; second derivatives over +-2 px). Applied when 1 < x < w - 2 and 1 < y < h - 2 and the
  Hessian is invertible, as in the official code. ``blur_kernel=0`` skips the blur.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from posematch.types import DecodedKeypoints

SCORES = ("max", "mass")
DECODERS = ("window", "argmax", "dark")

# cv2.getGaussianKernel uses these fixed taps for ksize <= 7 when sigma <= 0.
_CV2_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def _check_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps: expected (B, K, h, w), got shape {tuple(heatmaps.shape)}")
    return heatmaps.float() if heatmaps.dtype != torch.float64 else heatmaps


def _argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum value and its (x, y) integer pixel of every heatmap (first one on ties)."""
    w = heatmaps.shape[-1]
    scores, flat = heatmaps.flatten(2).max(dim=-1)
    return scores, flat % w, torch.div(flat, w, rounding_mode="floor")


def _at(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """heatmaps[b, k, y, x] for (B, K) integer maps; indices are clamped to the grid."""
    h, w = heatmaps.shape[-2:]
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return heatmaps.flatten(2).gather(-1, idx.unsqueeze(-1)).squeeze(-1)


def decode_window(heatmaps: torch.Tensor, score: str = "max") -> DecodedKeypoints:
    """The paper's 2x2-window decoder; see the module docstring.

    ``score="max"`` scores a joint with the heatmap maximum (official); ``"mass"`` with the share of
    the heatmap's relu-mass inside the chosen window, in [0, 1] (0 for a heatmap without mass).
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r}: expected one of {SCORES}")
    heatmaps = _check_heatmaps(heatmaps)
    scores = heatmaps.flatten(2).amax(dim=-1)
    mass = heatmaps.clamp_min(0)
    h, w = mass.shape[-2:]
    # A zero row/column beside a 1-pixel-wide map makes every window 2x2 without adding mass.
    mass = F.pad(mass, (0, int(w == 1), 0, int(h == 1)))
    window_mass = F.avg_pool2d(mass.flatten(0, 1).unsqueeze(1), 2, stride=1).squeeze(1)
    ww = window_mass.shape[-1]
    top_left = window_mass.flatten(1).argmax(dim=-1).view(heatmaps.shape[:2])
    x0, y0 = top_left % ww, torch.div(top_left, ww, rounding_mode="floor")
    m00, m10 = _at(mass, x0, y0), _at(mass, x0 + 1, y0)
    m01, m11 = _at(mass, x0, y0 + 1), _at(mass, x0 + 1, y0 + 1)
    total = m00 + m10 + m01 + m11
    empty = total <= 0
    total = torch.where(empty, torch.ones_like(total), total)
    dx = torch.where(empty, 0.5, (m10 + m11) / total)
    dy = torch.where(empty, 0.5, (m01 + m11) / total)
    keypoints = torch.stack([x0 + dx, y0 + dy], dim=-1)
    if score == "mass":
        heatmap_mass = mass.flatten(2).sum(dim=-1)
        scores = torch.where(empty, 0.0, total / torch.where(empty, 1.0, heatmap_mass))
    return DecodedKeypoints(keypoints=keypoints, scores=scores)


def decode_argmax(heatmaps: torch.Tensor) -> DecodedKeypoints:
    """Arg-max with the official quarter-pixel offset; see the module docstring."""
    heatmaps = _check_heatmaps(heatmaps)
    h, w = heatmaps.shape[-2:]
    scores, x, y = _argmax(heatmaps)
    positive = scores > 0
    x, y = torch.where(positive, x, 0), torch.where(positive, y, 0)
    inner = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    sx = torch.sign(_at(heatmaps, x + 1, y) - _at(heatmaps, x - 1, y))
    sy = torch.sign(_at(heatmaps, x, y + 1) - _at(heatmaps, x, y - 1))
    keypoints = torch.stack(
        [x + torch.where(inner, 0.25 * sx, 0.0), y + torch.where(inner, 0.25 * sy, 0.0)], dim=-1
    )
    return DecodedKeypoints(keypoints=keypoints.to(heatmaps.dtype), scores=scores)


def cv2_gaussian_taps(ksize: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """1-D taps of ``cv2.getGaussianKernel(ksize, 0)`` (odd ``ksize``)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"blur_kernel={ksize}: must be a positive odd integer (or 0 for no blur)")
    if ksize in _CV2_SMALL_GAUSSIAN:
        return torch.tensor(_CV2_SMALL_GAUSSIAN[ksize], dtype=dtype)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    r = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    taps = torch.exp(-(r**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(dtype)


def blur_keep_max(heatmaps: torch.Tensor, ksize: int) -> torch.Tensor:
    """DARK's ``gaussian_blur``: zero-padded separable Gaussian, rescaled to the original maximum."""
    taps = cv2_gaussian_taps(ksize, heatmaps.dtype).to(heatmaps.device)
    b, k, h, w = heatmaps.shape
    x = heatmaps.reshape(b * k, 1, h, w)
    r = ksize // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), taps.view(1, 1, -1, 1)).view(b, k, h, w)
    old_max = heatmaps.flatten(2).amax(-1)[..., None, None]
    new_max = x.flatten(2).amax(-1)[..., None, None]
    ratio = torch.where(new_max != 0, old_max / torch.where(new_max != 0, new_max, 1.0), 1.0)
    return x * ratio


def decode_dark(heatmaps: torch.Tensor, blur_kernel: int = 11) -> DecodedKeypoints:
    """DARK: arg-max refined by a Taylor step on the blurred log-heatmap; see the module docstring.

    Args:
        heatmaps: (B, K, h, w).
        blur_kernel: odd Gaussian kernel size (official: 11 for 64x48 heatmaps, 17 for 96x72);
            0 disables the blur.
    """
    heatmaps = _check_heatmaps(heatmaps)
    h, w = heatmaps.shape[-2:]
    scores, x, y = _argmax(heatmaps)
    positive = scores > 0
    x, y = torch.where(positive, x, 0), torch.where(positive, y, 0)
    hm = blur_keep_max(heatmaps, blur_kernel) if blur_kernel else heatmaps
    hm = torch.log(hm.clamp_min(1e-10))

    def at(dx: int, dy: int) -> torch.Tensor:
        return _at(hm, x + dx, y + dy)

    centre = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    hyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    det = hxx * hyy - hxy**2
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    det = torch.where(ok, det, 1.0)
    # offset = -H^{-1} g with H^{-1} = [[hyy, -hxy], [-hxy, hxx]] / det
    ox = -(hyy * gx - hxy * gy) / det
    oy = -(-hxy * gx + hxx * gy) / det
    keypoints = torch.stack(
        [x + torch.where(ok, ox, 0.0), y + torch.where(ok, oy, 0.0)], dim=-1
    ).to(heatmaps.dtype)
    return DecodedKeypoints(keypoints=keypoints, scores=scores)


def get_decoder(
    name: str, blur_kernel: int = 11, score: str = "max"
) -> Callable[[torch.Tensor], DecodedKeypoints]:
    """The decoder called ``name`` (``window``, ``argmax`` or ``dark``); ``score`` applies to
    ``window`` only (``argmax`` and ``dark`` always score with the maximum)."""
    if name not in DECODERS:
        raise ValueError(f"decoder={name!r}: expected one of {DECODERS}")
    if name == "window":
        if score not in SCORES:
            raise ValueError(f"score={score!r}: expected one of {SCORES}")
        return partial(decode_window, score=score)
    if score != "max":
        raise ValueError(f"score={score!r}: only the window decoder has scores other than 'max'")
    if name == "argmax":
        return decode_argmax
    if blur_kernel:  # dark: fail at construction on a bad kernel size
        cv2_gaussian_taps(blur_kernel)
    return partial(decode_dark, blur_kernel=blur_kernel)


__all__ = [
    "blur_keep_max",
    "cv2_gaussian_taps",
    "decode_argmax",
    "decode_dark",
    "decode_window",
    "get_decoder",
]
