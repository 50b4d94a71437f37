"""Top-down inference: crops -> heatmaps (with the flip test) -> keypoints in original image pixels.

Follows the official SimpleBaseline / HRNet test procedure:
- flip test: run the horizontally flipped crop too, flip its heatmaps back (mirror the width axis and
  swap left/right channels), shift them 1 px to the right (``shift=True``, official
  ``SHIFT_HEATMAP``: the flipped stride-4 output is misaligned by (stride - 1) / stride px) and average;
- decode with the codec's decoder (heatmap pixels, score = heatmap maximum);
- map back with the exact inverse of the crop: heatmap px -> input px (the codec's geometry) -> image
  px (the sample's inverse crop matrix).

``predict_loader`` also measures the health of the non-flipped heatmaps (``heatmap_mass_shares``):
the share of each heatmap's relu-mass in its top pixel and in the window decoder's 2x2 window, NaN
for a dead heatmap (no positive value), so a dying matching-loss run shows during validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from posematch.codecs.decoders import decode_window
from posematch.types import Batch, Codec, Predictions


def flip_back(heatmaps: torch.Tensor, flip_perm: Sequence[int], shift: bool = True) -> torch.Tensor:
    """Heatmaps of a flipped input, brought back to the unflipped frame.

    Args:
        heatmaps: (B, K, h, w) output for the flipped input.
        flip_perm: joint index map of the flip (``KeypointSpec.flip_permutation()``).
        shift: move the result 1 px right, as the official code (its first column repeats).
    """
    out = heatmaps.flip(-1)[:, list(flip_perm)]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


@torch.no_grad()
def forward_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    flip_perm: Sequence[int] | None = None,
    shift: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) crops -> (plain, test) (B, K, h, w) float32 heatmaps: ``plain`` from the crops
    alone, ``test`` averaged with the flipped pass when ``flip_perm`` is given (else ``plain``)."""
    plain = model(images).float()
    if flip_perm is None:
        return plain, plain
    flipped = model(images.flip(-1)).float()
    return plain, 0.5 * (plain + flip_back(flipped, flip_perm, shift))


def predict_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    flip_perm: Sequence[int] | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """(B, 3, H, W) crops -> (B, K, h, w) float32 heatmaps, averaged with the flipped pass if asked."""
    return forward_heatmaps(model, images, flip_perm, shift)[1]


@torch.no_grad()
def heatmap_mass_shares(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per heatmap, the share of its relu-mass in its top pixel and in the window decoder's 2x2
    window (``decode_window``'s window of largest relu-mass).

    Args:
        heatmaps: (B, K, h, w).

    Returns:
        top (B, K), window (B, K) float32 in [0, 1]; NaN for a dead heatmap (no positive value).
    """
    mass = heatmaps.float().clamp_min(0).flatten(2)
    total = mass.sum(-1)
    dead = total <= 0
    nan = torch.full_like(total, float("nan"))
    top = torch.where(dead, nan, mass.amax(-1) / torch.where(dead, 1.0, total))
    window = torch.where(dead, nan, decode_window(heatmaps, score="mass").scores.float())
    return top, window


def decode_to_image(
    heatmaps: torch.Tensor, inverse: torch.Tensor, codec: Codec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded heatmaps in image pixels: keypoints (B, K, 2) float64, scores (B, K) float32 (on the
    heatmaps' device). ``inverse``: (B, 2, 3) input-crop -> image matrices."""
    decoded = codec.decode(heatmaps)
    keypoints = to_image_pixels(codec.geometry.to_input(decoded.keypoints), inverse)
    return keypoints, decoded.scores.float()


def to_image_pixels(keypoints_input: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) input-crop pixels -> image pixels with (B, 2, 3) inverse crop matrices (float64)."""
    pts = keypoints_input.double()
    inverse = inverse.to(pts.device, torch.float64)
    return pts @ inverse[:, :, :2].transpose(1, 2) + inverse[:, None, :, 2]


def predict(
    model: nn.Module,
    images: torch.Tensor,
    inverse: torch.Tensor,
    codec: Codec,
    flip_perm: Sequence[int] | None = None,
    shift: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints of a batch of crops in original image pixels.

    Args:
        model: images (B, 3, H, W) -> heatmaps (B, K, h, w).
        images: the pipeline's uint8-valued crops (0-255; the model normalises), on its device.
        inverse: (B, 2, 3) input-crop -> image matrices (``Batch.inverse``).
        codec: has ``decode(heatmaps) -> DecodedKeypoints`` and ``geometry.to_input``.
        flip_perm: enable the flip test with this joint permutation.
        shift: the official 1 px shift of the flipped heatmaps.

    Returns:
        keypoints (B, K, 2) float64 image pixels, scores (B, K) float32.
    """
    heatmaps = predict_heatmaps(model, images, flip_perm, shift)
    keypoints, scores = decode_to_image(heatmaps, inverse, codec)
    return keypoints.cpu(), scores.cpu()


def predict_loader(
    model: nn.Module,
    loader: Iterable[Batch],
    codec: Codec,
    device: torch.device | str = "cpu",
    flip_perm: Sequence[int] | None = None,
    shift: bool = True,
) -> Iterator[Predictions]:
    """``Predictions`` batch by batch for a loader of dataset samples (``collate_fn=Batch.collate``):
    keypoints in image px, their scores, the box facts of each sample, and ``top_mass`` /
    ``window_mass`` of the non-flipped heatmaps (``heatmap_mass_shares``, NaN when dead)."""
    model.eval()
    for batch in loader:
        images = batch.image.to(device, non_blocking=True)
        plain, heatmaps = forward_heatmaps(model, images, flip_perm, shift)
        keypoints, scores = decode_to_image(heatmaps, batch.inverse, codec)
        top, window = heatmap_mass_shares(plain)
        yield Predictions(
            index=batch.index.numpy(),
            image_id=batch.image_id.numpy(),
            keypoints=keypoints.cpu().numpy(),
            keypoint_scores=scores.cpu().numpy(),
            box_score=batch.box_score.numpy(),
            area=batch.area.numpy(),
            valid=batch.valid.numpy(),
            top_mass=top.cpu().numpy(),
            window_mass=window.cpu().numpy(),
        )
