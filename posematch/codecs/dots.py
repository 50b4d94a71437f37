"""Dot codec of the distribution-matching loss (Qu et al., NeurIPS 2022).

Encoding keeps each ground-truth keypoint as a dot in heatmap pixels with a weight; the loss turns the
dot into demanders (``naive`` or ``subpixel``, see ``posematch.demanders``). Decoding uses the paper's
2x2-window rule (``posematch.codecs.decoders.decode_window``).
"""

from __future__ import annotations

import numpy as np
import torch

from posematch.codecs.decoders import get_decoder
from posematch.codecs.geometry import HeatmapGeometry
from posematch.types import DecodedKeypoints, DotTargets


class DotCodec:
    """Keypoints <-> dots in heatmap pixels.

    Args:
        input_size: (width, height) of the network input in pixels.
        heatmap_size: (width, height) of the heatmaps in pixels.
        udp: UDP coordinate mapping instead of ``x / stride``.
        decoder: ``"window"`` (the paper's, default), ``"argmax"`` or ``"dark"``.
        blur_kernel: Gaussian kernel of the ``dark`` decoder.
        score: keypoint score of the ``window`` decoder: ``"max"`` (the heatmap maximum, official)
            or ``"mass"`` (share of the heatmap's mass in the window; scale-free, see decoders).

    The codec encodes dots; which demanders the loss builds from them is the loss's setting alone.
    """

    target_kind = "dots"  # what encode() gives: a loss with the same kind can consume it

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        udp: bool = False,
        decoder: str = "window",
        blur_kernel: int = 11,
        score: str = "max",
    ) -> None:
        self.geometry = HeatmapGeometry(input_size, heatmap_size, udp)
        self._scale = torch.tensor(self.geometry.scale, dtype=torch.float32)
        self._upper = torch.tensor(self.geometry.heatmap_size, dtype=torch.float32) - 0.5
        self._scale_np, self._upper_np = self._scale.numpy(), self._upper.numpy()
        self.decoder = decoder
        self._decode = get_decoder(decoder, blur_kernel, score)

    def encode(
        self, keypoints: torch.Tensor | np.ndarray, visible: torch.Tensor | np.ndarray
    ) -> DotTargets:
        """Dots and weights from keypoints.

        Args:
            keypoints: (..., K, 2) input-image pixels (after the affine crop); torch or numpy.
            visible: (..., K) labelled flag or COCO visibility (> 0 means labelled).

        Returns:
            DotTargets (torch, float32) with dots in heatmap pixels; weight 0 for unlabelled joints
            and for dots that fall in no heatmap pixel (outside [-0.5, w - 0.5) x [-0.5, h - 0.5)).
        """
        if isinstance(keypoints, np.ndarray):
            # The per-sample path of the data workers: numpy ops cost a fraction of torch's there.
            dots = keypoints.astype(np.float32, copy=False) * self._scale_np
            inside = ((dots >= -0.5) & (dots < self._upper_np)).all(axis=-1)
            weights = ((np.asarray(visible) > 0) & inside).astype(np.float32)
            return DotTargets(keypoints=torch.from_numpy(dots), weights=torch.from_numpy(weights))
        dots = keypoints.float() * self._scale.to(keypoints.device)
        inside = ((dots >= -0.5) & (dots < self._upper.to(keypoints.device))).all(dim=-1)
        flags = torch.as_tensor(visible, device=keypoints.device)  # torch or numpy, as documented
        weights = ((flags > 0) & inside).to(dots.dtype)
        return DotTargets(keypoints=dots, weights=weights)

    def decode(self, heatmaps: torch.Tensor) -> DecodedKeypoints:
        """(B, K, h, w) heatmaps -> keypoints in heatmap pixels, by the configured decoder."""
        return self._decode(heatmaps)
