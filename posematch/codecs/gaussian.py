"""Gaussian-heatmap codec of the MSE baseline (Xiao et al., ECCV 2018; Sun et al., CVPR 2019).

Encoding follows the official SimpleBaseline / HRNet ``generate_target``: the centre is rounded with
``int(x / stride + 0.5)`` (truncation toward zero, as Python's ``int`` does), a (6 sigma + 1)-pixel
window of exp(-d^2 / (2 sigma^2)) is pasted around it, and the joint weight is 0 when the window lies
entirely outside the heatmap. ``unbiased=True`` follows DARK (Zhang et al., CVPR 2020): the Gaussian
is centred at the exact sub-pixel location and covers the whole heatmap.
"""

from __future__ import annotations

import numpy as np
import torch

from posematch.codecs.decoders import get_decoder
from posematch.codecs.geometry import HeatmapGeometry
from posematch.types import DecodedKeypoints, HeatmapTargets


class GaussianHeatmapCodec:
    """Keypoints <-> Gaussian heatmaps.

    Args:
        input_size: (width, height) of the network input in pixels.
        heatmap_size: (width, height) of the heatmaps in pixels.
        sigma: Gaussian standard deviation in heatmap pixels (official: 2 at 64x48, 3 at 96x72).
        unbiased: DARK-style sub-pixel centred Gaussian instead of the rounded official one.
        udp: UDP coordinate mapping instead of ``x / stride``.
        decoder: ``"argmax"`` (quarter offset, default), ``"dark"`` or ``"window"``.
        blur_kernel: Gaussian kernel of the ``dark`` decoder.
    """

    target_kind = "heatmaps"  # what encode() gives: a loss with the same kind can consume it

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2.0,
        unbiased: bool = False,
        udp: bool = False,
        decoder: str = "argmax",
        blur_kernel: int = 11,
    ) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma={sigma!r}: must be positive (heatmap pixels)")
        self.geometry = HeatmapGeometry(input_size, heatmap_size, udp)
        self.sigma = float(sigma)
        self.unbiased = unbiased
        self.decoder = decoder
        self._decode = get_decoder(decoder, blur_kernel)

    def encode(
        self, keypoints: torch.Tensor | np.ndarray, visible: torch.Tensor | np.ndarray
    ) -> HeatmapTargets:
        """Target heatmaps and weights.

        Args:
            keypoints: (..., K, 2) input-image pixels (after the affine crop).
            visible: (..., K) labelled flag or COCO visibility (> 0 means labelled).

        Returns:
            HeatmapTargets: heatmaps (..., K, h, w) float32 in [0, 1], weights (..., K).
        """
        keypoints, visible = torch.as_tensor(keypoints), torch.as_tensor(visible)
        w, h = self.geometry.heatmap_size
        tmp = 3.0 * self.sigma
        exact = self.geometry.to_heatmap(keypoints.float())
        centre = exact if self.unbiased else torch.trunc(exact + 0.5)
        lower = centre - tmp
        upper = centre + tmp + 1
        if not self.unbiased:
            lower, upper = torch.trunc(lower), torch.trunc(upper)
        outside = (
            (lower[..., 0] >= w) | (lower[..., 1] >= h) | (upper[..., 0] < 0) | (upper[..., 1] < 0)
        )
        weights = ((visible > 0) & ~outside).float()

        xs = torch.arange(w, dtype=torch.float32, device=keypoints.device)
        ys = torch.arange(h, dtype=torch.float32, device=keypoints.device)
        if self.unbiased:
            gx = torch.exp(-((xs - centre[..., 0:1]) ** 2) / (2 * self.sigma**2))
            gy = torch.exp(-((ys - centre[..., 1:2]) ** 2) / (2 * self.sigma**2))
        else:
            # The official window starts at trunc(mu - 3 sigma) and its peak sits size // 2 pixels
            # further on (size = 6 sigma + 1), which differs from mu only for fractional 3 sigma.
            peak = lower + float((2 * tmp + 1) // 2)
            gx = torch.exp(-((xs - peak[..., 0:1]) ** 2) / (2 * self.sigma**2))
            gy = torch.exp(-((ys - peak[..., 1:2]) ** 2) / (2 * self.sigma**2))
            gx = gx * ((xs >= lower[..., 0:1]) & (xs < upper[..., 0:1]))
            gy = gy * ((ys >= lower[..., 1:2]) & (ys < upper[..., 1:2]))
        heatmaps = gy.unsqueeze(-1) * gx.unsqueeze(-2) * weights[..., None, None]
        return HeatmapTargets(heatmaps=heatmaps, weights=weights)

    def decode(self, heatmaps: torch.Tensor) -> DecodedKeypoints:
        """(B, K, h, w) heatmaps -> keypoints in heatmap pixels, by the configured decoder."""
        return self._decode(heatmaps)
