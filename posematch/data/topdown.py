"""The top-down dataset shared by COCO, MPII and user datasets: one item per person instance.

A subclass only turns its annotation files into ``Instance`` records; reading the image, cropping,
augmenting and encoding targets happen here. Every item is reproducible from (seed, epoch, index),
whatever the number of workers: call ``set_epoch`` at the start of each epoch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from posematch.data.transforms import TopDownPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instance:
    """One person instance.

    image_path: the image file. image_id: the dataset's image id. center: (2,) image pixels.
    scale: (2,) units of 200 px. keypoints: (K, 2) image pixels (zeros when unknown, e.g. detection
    boxes). visible: (K,) 0 = unlabelled, 1 = labelled but hidden, 2 = visible (MPII: 0/1).
    score: box score (1 for ground-truth boxes). area: box area in image pixels^2 as the official
    evaluation uses it (scale * 200 squared). record: where it came from, for error messages.
    """

    image_path: str
    image_id: int
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    score: float
    area: float
    record: str


class Codec(Protocol):
    """What a dataset needs of a codec (``posematch.codecs``): keypoints -> targets."""

    def encode(self, keypoints: torch.Tensor, visible: torch.Tensor) -> Any: ...


class BadRecordError(ValueError):
    """A record or image that cannot be used; the message names the file and the record."""


class TopDownDataset(Dataset):
    """Person instances -> training / evaluation samples.

    Args:
        instances: the records.
        pipeline: crop + augmentation.
        codec: target encoder; ``encode`` returns DotTargets (``keypoints``) or HeatmapTargets
            (``heatmaps``), and either has ``weights``.
        skip_bad: instead of raising on an unreadable image, use the next instance and count it
            (``pop_skipped`` returns and clears the count; the trainer reports it per epoch).
        seed: base seed of the augmentation draws.
    """

    def __init__(
        self,
        instances: list[Instance],
        pipeline: TopDownPipeline,
        codec: Codec,
        skip_bad: bool = False,
        seed: int = 0,
    ) -> None:
        if not instances:
            raise ValueError(f"{type(self).__name__}: no instances to load")
        self.instances = instances
        self.pipeline = pipeline
        self.codec = codec
        self.skip_bad = skip_bad
        self.seed = seed
        self.epoch = 0
        # Shared with worker processes, so skips made in workers are counted in the main process.
        self._skipped = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pop_skipped(self) -> int:
        n = int(self._skipped.item())
        self._skipped.zero_()
        return n

    def read_image(self, inst: Instance) -> np.ndarray:
        """The instance's image, (H, W, 3) uint8 BGR; BadRecordError naming the file otherwise."""
        image = cv2.imread(inst.image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:  # only then look why: a stat per sample costs as much as a crop's maths
            if not os.path.isfile(inst.image_path):
                raise BadRecordError(f"{inst.image_path}: image file missing ({inst.record})")
            raise BadRecordError(f"{inst.image_path}: cannot decode image ({inst.record})")
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self)):
            inst = self.instances[(index + attempt) % len(self)]
            try:
                image = self.read_image(inst)
            except BadRecordError:
                if not self.skip_bad:
                    raise
                self._skipped += 1
                log.warning("skipping %s", inst.record, exc_info=True)
                continue
            return self._sample(inst, image, index)
        raise BadRecordError(f"{type(self).__name__}: every image is unreadable")

    def _sample(self, inst: Instance, image: np.ndarray, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        crop = self.pipeline(image, inst.keypoints, inst.visible, inst.center, inst.scale, rng)
        keypoints = crop.keypoints.astype(np.float32)
        targets = self.codec.encode(keypoints, crop.visible)  # numpy in: the codecs' cheap path
        keypoints = torch.from_numpy(keypoints)
        target = targets.keypoints if hasattr(targets, "keypoints") else targets.heatmaps
        return {
            "image": crop.image,
            "target": target,
            "target_weight": targets.weights,
            "keypoints": keypoints,  # input pixels
            "meta": {
                "image_id": inst.image_id,
                "center": crop.center,
                "scale": crop.scale,
                "rotation": crop.rotation,
                "flipped": crop.flipped,
                "inverse": crop.inverse,  # numpy: default_collate makes batched tensors
                "score": inst.score,
                "area": inst.area,
                "index": index,
            },
        }
