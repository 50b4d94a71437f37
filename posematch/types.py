"""Dataclasses shared by every room of posematch, with their shapes and units.

Conventions used throughout:
- heatmaps are (B, K, H, W); heatmap pixel (row i, col j) has its centre at (x=j, y=i);
- keypoints are (..., K, 2) as (x, y); the unit (input-image or heatmap pixels) is named by each field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import default_collate

ArrayLike = np.ndarray | torch.Tensor


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

    input_size, heatmap_size: (width, height) pixels; udp: the UDP convention instead of x / stride;
    scale: (x, y) heatmap pixels per input pixel.
    """

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    udp: bool
    scale: tuple[float, float]

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

    def encode(self, keypoints: ArrayLike, visible: ArrayLike) -> DotTargets | HeatmapTargets: ...

    def decode(self, heatmaps: torch.Tensor) -> DecodedKeypoints: ...


@dataclass(frozen=True)
class Sample:
    """One person instance as a top-down dataset gives it (``posematch.data.topdown``).

    image: (3, H, W) uint8 tensor, the input crop in the pipeline's channel order (0-255; the model
        normalises). target: the codec's target: dots (K, 2) heatmap px (``DotTargets``) or
        heatmaps (K, h, w) (``HeatmapTargets``). target_weight: (K,) float32. keypoints: (K, 2)
        float32, the ground truth in input-crop pixels.
    image_id: the dataset's image id. center: (2,) float64 image px and scale: (2,) float64 units
        of 200 px, the crop used. rotation: degrees. flipped: a horizontal flip was applied.
    inverse: (2, 3) float64, input-crop px -> original image px. box_score: the person box's
        score (1 for ground-truth boxes). area: image px^2, the box area the official evaluation
        uses. index: the position in the dataset. valid: False for an unreadable image skipped in
        evaluation (a blank crop; evaluation drops it and counts it).
    """

    image: torch.Tensor
    target: torch.Tensor
    target_weight: torch.Tensor
    keypoints: torch.Tensor
    image_id: int
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool
    inverse: np.ndarray
    box_score: float
    area: float
    index: int
    valid: bool = True


@dataclass(frozen=True)
class Batch:
    """B samples stacked by ``Batch.collate`` (a DataLoader's ``collate_fn``): every ``Sample`` field
    with a leading batch axis, as torch tensors (numbers become int64 / float64 / bool tensors,
    ``torch.utils.data.default_collate``'s types)."""

    image: torch.Tensor
    target: torch.Tensor
    target_weight: torch.Tensor
    keypoints: torch.Tensor
    image_id: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    flipped: torch.Tensor
    inverse: torch.Tensor
    box_score: torch.Tensor
    area: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def collate(cls, samples: Sequence[Sample]) -> Batch:
        """Stack ``samples`` field by field."""
        names = [f.name for f in fields(Sample)]
        return cls(**default_collate([{n: getattr(s, n) for n in names} for s in samples]))

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader calls this under ``pin_memory=True``)."""
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class Predictions:
    """N predicted person instances (numpy), batch by batch from ``posematch.inference`` or
    gathered over a dataset split in dataset order by ``posematch.engine.evaluate``.

    index: (N,) int64 dataset positions. image_id: (N,) int64. keypoints: (N, K, 2) float64,
    (x, y) original-image pixels. keypoint_scores: (N, K) float32, each joint's decoded score (the
    heatmap maximum). box_score: (N,) float64, the person box's score (1 for ground-truth boxes).
    area: (N,) float64 image px^2 (the box area OKS-NMS uses). valid: (N,) bool, False where the
    image was unreadable and skipped (evaluators drop the row; its people count as missed).
    top_mass, window_mass: (N, K) float32, the share of each non-flipped heatmap's relu-mass in its
    top pixel and in the decoder's 2x2 window; NaN for a dead heatmap (no positive value).
    """

    index: np.ndarray
    image_id: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    box_score: np.ndarray
    area: np.ndarray
    valid: np.ndarray
    top_mass: np.ndarray
    window_mass: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        """One ``Predictions`` of all ``parts`` in their order."""
        if not parts:
            raise ValueError("Predictions.concatenate: no parts")
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def take(self, rows: np.ndarray) -> Predictions:
        """The rows ``rows`` (an index array or boolean mask), in that order."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


class Evaluator(Protocol):
    """A metric behind reset / process / evaluate (COCO keypoints, MPII PCKh), as detectron2's.

    ``process`` adds a batch of ``Predictions`` (any order; the evaluator keeps what it needs);
    ``evaluate`` returns the metrics (fractions for COCO, percent for MPII) and ``scored`` (False
    where the split has no ground truth: results are written, not scored).
    """

    @property
    def primary_metric(self) -> str:
        """The metric ``best.pth`` follows unless ``trainer.monitor`` names another."""
        ...

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The higher-is-better metrics ``evaluate`` reports."""
        ...

    def reset(self) -> None: ...

    def process(self, predictions: Predictions) -> None: ...

    def evaluate(self) -> dict[str, float | bool]: ...

    def restrict(self, instances: Sequence[int], image_ids: Sequence[int]) -> None:
        """Score only these (a smoke run's subset: the dataset's instance indices and their
        images, every instance of those images included); the metrics then describe the subset,
        not the split."""
        ...


class TrainingSet(Protocol):
    """What the training loop asks of its dataset: indexing into ``Sample``s, the epoch whose
    augmentation draws to use, a count of skipped records, and the labels of the heatmap panel
    (joint names; the image tensors' channel order, ``"rgb"`` or ``"bgr"``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def set_epoch(self, epoch: int) -> None: ...

    def skipped(self) -> int: ...

    @property
    def joint_names(self) -> tuple[str, ...]: ...

    @property
    def channels(self) -> str: ...


class EvaluationSet(Protocol):
    """What evaluation asks of its dataset: indexing into ``Sample``s (``index`` = position) and
    the records it skipped while loading (``skip_bad``), whose people count as missed."""

    bad_records: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
