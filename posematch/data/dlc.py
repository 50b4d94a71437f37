"""DeepLabCut (and lightning-pose) projects as a top-down dataset: one instance per labelled frame.

The project's labels are read by ``posematch.dlc_project`` (the evaluator reads them the same
way): frames sorted by path, a frame's position in that list is its ``image_id``, and the split is
a seeded permutation of that list (``split_indices``: DeepLabCut's 95 % train fraction, or k
folds). A malformed label file is a ``BadRecordError`` naming the file, line and column.

The crop of a frame (``crop``):
- ``"box"``: the tight box around the labelled points, each side grown to at least
  ``min_box_size`` px about its centre (a frame with one labelled point still gets a crop), then
  to the input aspect ratio and padded by 1.25 as COCO boxes are (``box_to_center_scale``);
- ``"frame"``: the whole frame (its size read from the PNG / JPEG header), grown to the input
  aspect ratio, no padding. Ground-truth boxes tell the model where the animal is; ``"frame"`` is
  DeepLabCut's own protocol (it sees whole frames), so its pixel errors compare with DeepLabCut's.
Unlabelled parts have ``visible`` 0 and keypoints (0, 0); labelled ones ``visible`` 2.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image

from posematch.data.boxes import PIXEL_STD, box_to_center_scale
from posematch.data.topdown import (
    BadRecordError,
    Codec,
    Instance,
    TopDownDataset,
    reject,
)
from posematch.data.transforms import TopDownPipeline
from posematch.dlc_project import (
    DlcFormatError,
    DlcProject,
    LabelledFrame,
    labelled_box,
    project_split,
    read_project,
)
from posematch.keypoints import KeypointSpec

log = logging.getLogger(__name__)

CROPS = ("box", "frame")
BOX_PADDING = 1.25  # the COCO / SimpleBaseline padding of a box crop


def image_size(path: str, record: str = "") -> tuple[int, int]:
    """(width, height) in pixels of an image file, from its header (Pillow reads only that);
    BadRecordError naming the file when it cannot be read or has no size."""
    where = f" ({record})" if record else ""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (
        OSError,
        ValueError,
    ) as err:  # missing, unreadable, not an image (UnidentifiedImageError)
        raise BadRecordError(f"{path}: cannot read the image's size ({err}){where}") from err
    if width <= 0 or height <= 0:
        raise BadRecordError(f"{path}: image header gives size {width} x {height}{where}")
    return width, height


def crop_center_scale(
    frame: LabelledFrame,
    crop: str,
    aspect_ratio: float,
    min_box_size: float,
    image_path: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (2,) image px and scale (2,) units of 200 px of a frame's crop (module docstring)."""
    if crop == "frame":
        width, height = image_size(image_path, frame.source)
        # The frame's pixel centres span 0 .. W - 1: its box is (-0.5, -0.5, W, H).
        return box_to_center_scale((-0.5, -0.5, width, height), aspect_ratio, padding=1.0)
    x, y, w, h = labelled_box(frame.keypoints)
    cx, cy = x + 0.5 * w, y + 0.5 * h
    w, h = max(w, min_box_size), max(h, min_box_size)
    box = (cx - 0.5 * w, cy - 0.5 * h, w, h)
    return box_to_center_scale(box, aspect_ratio, padding=BOX_PADDING)


def read_labels(project: str, skip_bad: bool = False) -> DlcProject:
    """``read_project`` with its format errors as ``BadRecordError`` (the data room's type)."""
    try:
        return read_project(project, skip_bad)
    except DlcFormatError as err:
        raise BadRecordError(str(err)) from err


class DlcKeypoints(TopDownDataset):
    """A DeepLabCut / lightning-pose project's labelled frames of one split.

    Args:
        project: the project folder (``config.yaml``, ``labeled-data/``; see
            ``posematch.dlc_project``).
        split: ``"train"`` or ``"test"`` (the held-out frames).
        pipeline: crop and augmentation.
        codec: target encoder.
        spec: the keypoint description; its ``names`` must be the project's body parts in order
            (config.yaml's ``bodyparts``, else the label file's header order).
        train_fraction: share of the frames in ``train`` (DeepLabCut's default 0.95), when
            ``num_folds`` is 0.
        num_folds: 0 = use ``train_fraction``; k >= 2 = k folds, ``fold`` held out.
        fold: the held-out fold (0 .. k - 1).
        split_seed: seed of the frame permutation that defines the split.
        crop: ``"box"`` (around the labelled points) or ``"frame"`` (the whole frame).
        min_box_size: the least side, in image pixels, of the ``"box"`` crop's box before the
            1.25 padding (a frame with one labelled point, or points on a line, still gets a crop).
        skip_bad: skip and count malformed label rows and unreadable images instead of raising
            (header errors and frames labelled twice always raise).
        seed: base seed of the augmentation draws.
    """

    def __init__(
        self,
        project: str,
        split: str,
        pipeline: TopDownPipeline,
        codec: Codec,
        spec: KeypointSpec,
        train_fraction: float = 0.95,
        num_folds: int = 0,
        fold: int = 0,
        split_seed: int = 0,
        crop: str = "box",
        min_box_size: float = 32.0,
        skip_bad: bool = False,
        seed: int = 0,
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop={crop!r}: expected one of {CROPS}")
        if not min_box_size > 0:
            raise ValueError(f"min_box_size={min_box_size}: expected a positive size in pixels")
        self.project = read_labels(project, skip_bad)
        self.split = split
        self.frame_ids = project_split(self.project, project, spec.names, split, train_fraction,
                                       num_folds, fold, split_seed)  # fmt: skip
        bad = list(self.project.bad_rows)
        instances = []
        for image_id in self.frame_ids.tolist():
            frame = self.project.frames[image_id]
            path = os.path.join(project, frame.path)
            try:
                center, scale = crop_center_scale(
                    frame, crop, pipeline.aspect_ratio, min_box_size, path
                )
            except BadRecordError as err:
                reject(frame.source, err, skip_bad, bad)
                continue
            labelled = ~np.isnan(frame.keypoints).any(axis=1)
            instances.append(
                Instance(
                    image_path=path,
                    image_id=int(image_id),
                    center=center,
                    scale=scale,
                    keypoints=np.where(labelled[:, None], frame.keypoints, 0.0),
                    visible=np.where(labelled, 2, 0).astype(np.int64),
                    score=1.0,
                    area=float(np.prod(scale * PIXEL_STD)),
                    record=f"{frame.source} ({frame.path})",
                )
            )
        if bad:
            log.warning("project=%s: skipped %d malformed records", project, len(bad))
        if not instances:
            raise BadRecordError(f"project={project}: no usable frames in split {split!r}")
        super().__init__(instances, pipeline, codec, skip_bad=skip_bad, seed=seed, bad_records=bad)
