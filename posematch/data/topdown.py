"""The top-down dataset shared by COCO, MPII and user datasets: one item per person instance.

A subclass only turns its annotation files into ``Instance`` records (checked with
``check_finite`` / ``check_box_size``: a bad record is a ``BadRecordError`` naming the file and the
record, or with ``skip_bad`` a counted skip); reading the image, cropping, augmenting and encoding
targets happen here. Every item is reproducible from (seed, epoch, index), whatever the number of
workers: call ``set_epoch`` at the start of each epoch.

Images are decoded from their bytes after a check that the file is complete (a JPEG ends with its
EOI marker, a PNG with its IEND chunk): libjpeg decodes a truncated JPEG without an error, greying
the part that is missing, and that must never be trained or scored on silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from posematch.data.transforms import TopDownPipeline
from posematch.types import Codec, DotTargets, Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instance:
    """One person instance.

    image_path: the image file. image_id: the dataset's image id. center: (2,) image pixels.
    scale: (2,) units of 200 px. keypoints: (K, 2) image pixels (zeros when unknown, e.g. detection
    boxes). visible: (K,) 0 = unlabelled, 1 = labelled but hidden, 2 = visible (MPII: 0/1).
    score: box score (1 for ground-truth boxes). area: box area in image pixels^2 as the official
    evaluation uses it (scale * 200 squared). record: where it came from, for error messages.
    image_size: (width, height) in pixels the annotation file gives for the image, or None; a
    decoded image of another size is a bad record (its labels belong to other pixels).
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
    image_size: tuple[int, int] | None = None


class BadRecordError(ValueError):
    """A record or image that cannot be used; the message names the file and the record."""


def check_finite(record: str, **fields: Any) -> None:
    """BadRecordError naming ``record`` and the field when a value is NaN or infinite."""
    for name, value in fields.items():
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise BadRecordError(f"{record}: {name!r} holds a non-finite value")


def check_box_size(record: str, width: float, height: float, field: str = "bbox") -> None:
    """BadRecordError when a box has no extent (its crop would have no scale)."""
    if not (width > 0 and height > 0):
        raise BadRecordError(f"{record}: {field!r} has size {width} x {height}, not positive")


def reject(
    record: str, err: Exception, skip_bad: bool, skipped: list[str], what: str = "record"
) -> None:
    """A bad record: raise ``BadRecordError`` naming it (wrapping ``err``), or under ``skip_bad`` warn
    and append it to ``skipped``."""
    if not skip_bad:
        if isinstance(err, BadRecordError):
            raise err
        raise BadRecordError(f"{record}: malformed {what} ({err!r})") from err
    log.warning("skipping: %s", err)
    skipped.append(record)


# Trailing bytes tolerated after an image's end marker (some writers pad files).
_TAIL = 1024


def image_complete(data: np.ndarray) -> bool | None:
    """Whether the bytes of a JPEG / PNG file reach its end marker; None for other formats.

    In JPEG entropy-coded data every 0xFF byte is stuffed, so FF D9 occurs only as the end marker.
    """
    head, tail = data[:8].tobytes(), data[-_TAIL:].tobytes()
    if head[:2] == b"\xff\xd8":
        return b"\xff\xd9" in tail
    if head == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in tail
    return None


def decode_image(path: str, record: str = "", rgb: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 BGR (RGB when ``rgb``) of an image file; BadRecordError naming the file
    when it is missing, truncated or cannot be decoded."""
    where = f" ({record})" if record else ""
    try:
        with open(path, "rb", buffering=0) as file:  # (a third of np.fromfile's time)
            data = np.frombuffer(file.read(), dtype=np.uint8)
    except OSError as err:
        raise BadRecordError(f"{path}: cannot read image ({err.strerror}){where}") from err
    if data.size == 0:
        raise BadRecordError(f"{path}: image file is empty{where}")
    if image_complete(data) is False:
        raise BadRecordError(f"{path}: image file is truncated (no end marker){where}")
    # The decoder writes either order at the same cost (the same pixels, bit for bit).
    order = cv2.IMREAD_COLOR_RGB if rgb else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, order | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise BadRecordError(f"{path}: cannot decode image{where}")
    return image


class TopDownDataset(Dataset):
    """Person instances -> training / evaluation samples.

    Args:
        instances: the records.
        pipeline: crop + augmentation.
        codec: target encoder; ``encode`` returns DotTargets (``keypoints``) or HeatmapTargets
            (``heatmaps``), and either has ``weights``.
        skip_bad: instead of raising on an unreadable image, count the record once and, in
            training (``pipeline.train``), use the next readable instance; in evaluation return a
            blank crop marked ``valid=False``, which evaluation drops and counts.
        seed: base seed of the augmentation draws.
        bad_records: records the subclass skipped while loading (``skip_bad``), for the count.
    """

    def __init__(
        self,
        instances: list[Instance],
        pipeline: TopDownPipeline,
        codec: Codec,
        skip_bad: bool = False,
        seed: int = 0,
        bad_records: list[str] | None = None,
    ) -> None:
        if not instances:
            raise ValueError(f"{type(self).__name__}: no instances to load")
        pipeline.check_agrees_with(codec.geometry.input_size, codec.geometry.udp)
        self.bad_records = list(bad_records or [])
        self.instances = instances
        self.pipeline = pipeline
        self.codec = codec
        if not isinstance(skip_bad, bool):
            raise ValueError(f"skip_bad={skip_bad!r}: expected true or false")
        self.skip_bad = skip_bad
        self.seed = seed
        # Shared with loader workers: persistent workers keep the copy of this dataset they started
        # with, so a plain attribute set by ``set_epoch`` in the main process would never reach
        # them and every epoch would repeat the first epoch's augmentation draws.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # One flag per record, shared with worker processes: a bad image is counted once however
        # often it is drawn, and skips made in workers are seen in the main process.
        self._bad_image = torch.zeros(len(instances), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.instances)

    @property
    def epoch(self) -> int:
        """The epoch whose augmentation draws the items use (see ``set_epoch``)."""
        return int(self._epoch.numpy()[0])  # a numpy view of the shared memory: cheaper than item()

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items' augmentations for ``epoch``, in this process and every worker."""
        self._epoch.fill_(int(epoch))

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The spec's joint names, in channel order."""
        return tuple(self.pipeline.spec.names)

    @property
    def channels(self) -> str:
        """The channel order of the image tensors: ``"rgb"`` or ``"bgr"``."""
        return self.pipeline.color

    def skipped(self) -> int:
        """Records skipped so far: malformed at load time plus unreadable images (each once)."""
        return len(self.bad_records) + int(self._bad_image.sum())

    def skipped_records(self) -> list[str]:
        """The skipped records by name (see ``skipped``)."""
        bad = self._bad_image.nonzero().flatten().tolist()
        return self.bad_records + [self.instances[i].record for i in bad]

    def read_image(self, inst: Instance) -> np.ndarray:
        """The instance's image, (H, W, 3) uint8 in the pipeline's channel order (``color``: the
        network's, so the crop needs no conversion); BadRecordError naming the file otherwise."""
        image = decode_image(inst.image_path, inst.record, rgb=self.pipeline.color == "rgb")
        if inst.image_size is not None and tuple(image.shape[1::-1]) != tuple(inst.image_size):
            width, height = inst.image_size
            raise BadRecordError(
                f"{inst.image_path}: decoded {image.shape[1]} x {image.shape[0]} px, but "
                f"{inst.record} says {width} x {height}"
            )
        return image

    def __getitem__(self, index: int) -> Sample:
        if not self.pipeline.train:  # evaluation: never score one instance in place of another
            return self._eval_item(index)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            image = self._image_or_none(i)
            if image is not None:
                return self._sample(self.instances[i], image, index)
        raise BadRecordError(f"{type(self).__name__}: every image is unreadable")

    def _image_or_none(self, i: int) -> np.ndarray | None:
        """Record ``i``'s image; None for a bad one under ``skip_bad`` (flagged, warned once)."""
        if self.skip_bad and self._bad_image[i]:
            return None
        try:
            return self.read_image(self.instances[i])
        except BadRecordError:
            if not self.skip_bad:
                raise
            self._bad_image[i] = True
            log.warning("skipping %s", self.instances[i].record, exc_info=True)
            return None

    def _eval_item(self, index: int) -> Sample:
        image = self._image_or_none(index)
        if image is not None:
            return self._sample(self.instances[index], image, index)
        # A blank crop of the right size keeps batches and shards whole; evaluation drops it.
        sample = self._sample(self.instances[index], np.zeros((1, 1, 3), np.uint8), index)
        return replace(sample, valid=False)

    def _sample(self, inst: Instance, image: np.ndarray, index: int) -> Sample:
        # default_rng's own stream, built directly: default_rng takes 20 us here, this 8.
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence((self.seed, self.epoch, index)))
        )
        crop = self.pipeline(
            image, inst.keypoints, inst.visible, inst.center, inst.scale, rng, self.pipeline.color
        )
        keypoints = crop.keypoints.astype(np.float32)
        targets = self.codec.encode(keypoints, crop.visible)  # numpy in: the codecs' cheap path
        target = targets.keypoints if isinstance(targets, DotTargets) else targets.heatmaps
        return Sample(
            image=crop.image,
            target=target,
            target_weight=targets.weights,
            keypoints=torch.from_numpy(keypoints),
            image_id=inst.image_id,
            center=crop.center,
            scale=crop.scale,
            rotation=crop.rotation,
            flipped=crop.flipped,
            inverse=crop.inverse,
            box_score=inst.score,
            area=inst.area,
            index=index,
        )


class InstanceSubset(Dataset):
    """Some instances of a dataset (ascending ``indices``), re-indexed 0 .. n - 1: a smoke run's
    validation (``trainer.max_val_instances``), whose evaluator is restricted to the same
    instances (``Evaluator.restrict``)."""

    def __init__(self, base: TopDownDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = sorted(int(i) for i in indices)
        if not self.indices or self.indices[-1] >= len(base) or self.indices[0] < 0:
            raise ValueError(f"InstanceSubset: indices must lie in [0, {len(base)})")
        # Malformed records were dropped at load time and belong to no chosen image: the subset's
        # count of them is unknown, and the split's would overstate it.
        self.bad_records: list[str] = []

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return replace(self.base[self.indices[index]], index=index)


def first_instances(dataset: TopDownDataset, n: int) -> tuple[list[int], list[int]]:
    """The first ``n`` instances of ``dataset`` completed to whole images: (instance indices,
    ascending; their image ids, in first-seen order). Every instance of a chosen image is in, so
    an image's ground truth is never scored against part of its people."""
    chosen: dict[int, None] = {}
    for inst in dataset.instances[:n]:
        chosen.setdefault(int(inst.image_id), None)
    indices = [i for i, inst in enumerate(dataset.instances) if int(inst.image_id) in chosen]
    return indices, list(chosen)
