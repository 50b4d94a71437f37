"""Dataclasses shared by every room of posematch, with their shapes and units.

Conventions used throughout:
- heatmaps are (B, K, H, W); heatmap pixel (row i, col j) has its centre at (x=j, y=i);
- keypoints are (..., K, 2) as (x, y); the unit (input-image or heatmap pixels) is named by each field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class DotTargets:
    """Targets of the distribution-matching loss: the ground-truth dot of every joint.

    keypoints: (..., K, 2) float, (x, y) in heatmap pixels.
    weights:   (..., K) float, 0 for unlabelled joints and joints outside the heatmap.
    """

    keypoints: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class HeatmapTargets:
    """Targets of the Gaussian-MSE baseline.

    heatmaps: (..., K, H, W) float in [0, 1].
    weights:  (..., K) float, 0 for unlabelled joints and Gaussians entirely outside the heatmap.
    """

    heatmaps: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class DecodedKeypoints:
    """Keypoints read off heatmaps.

    keypoints: (B, K, 2) float, (x, y) in heatmap pixels.
    scores:    (B, K) float, the maximum of each joint's heatmap.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class LossOutput:
    """What a training loss returns to the loop: its value and what it measured on the way.

    value: () float tensor, the batch's loss, attached to the graph.
    stats: per-call statistics for logging, plain floats (the matching loss: ``sinkhorn_iters``,
        the Sinkhorn scalings run); the loop averages each over the epoch's steps.
    """

    value: torch.Tensor
    stats: Mapping[str, float] = field(default_factory=dict)


class Loss(Protocol):
    """A training loss: stateless, its statistics leave with its value (``with_stats``).

    ``target_kind`` names the codec targets it consumes (``"dots"`` or ``"heatmaps"``).
    """

    target_kind: str

    def __call__(
        self, heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def with_stats(
        self, heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> LossOutput: ...


class Geometry(Protocol):
    """A codec's map between input-crop pixels and heatmap pixels (``posematch.codecs.geometry``).

    input_size, heatmap_size: (width, height) pixels; udp: the UDP convention instead of x / stride.
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    udp: bool

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor: ...

    def to_input(self, keypoints: torch.Tensor) -> torch.Tensor: ...


class Codec(Protocol):
    """Keypoints <-> heatmap targets and back (``DotCodec``, ``GaussianHeatmapCodec``).

    ``encode`` takes (..., K, 2) input-crop pixels and (..., K) visibility and returns the targets
    its loss consumes (``target_kind``: ``"dots"`` -> ``DotTargets``, ``"heatmaps"`` ->
    ``HeatmapTargets``); ``decode`` reads (B, K, h, w) heatmaps into heatmap-pixel keypoints.
    """

    target_kind: str
    geometry: Geometry

    def encode(self, keypoints: Any, visible: Any) -> DotTargets | HeatmapTargets: ...

    def decode(self, heatmaps: torch.Tensor) -> DecodedKeypoints: ...


class Evaluator(Protocol):
    """A metric behind reset / process / evaluate (COCO keypoints, MPII PCKh).

    ``process_predictions`` takes the arrays ``posematch.engine.evaluate`` gathers over a dataset
    (index, image_id, keypoints (N, K, 2) image px, scores (N, K), score, area, valid (N,));
    ``evaluate`` returns the metrics (fractions for COCO, percent for MPII) and ``scored``.
    """

    def reset(self) -> None: ...

    def process_predictions(self, predictions: dict[str, Any]) -> None: ...

    def evaluate(self) -> dict[str, float | bool]: ...
