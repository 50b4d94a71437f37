"""MPII Human Pose, top-down, in the format of the official HRNet / SimpleBaseline ``annot/*.json``.

Each record is ``{image, center, scale, joints (16 x [x, y]), joints_vis (16)}`` with MATLAB
(1-based) coordinates and ``scale`` = person size / 200 px. The official conventions are applied:
centre y += 15 * scale, scale *= 1.25, then 1 is subtracted from the centre and from the joints
(Andriluka et al. 2014; HRNet ``lib/dataset/mpii.py``). The test split has no joints.
``annot/gt_valid.mat`` (read by the evaluation) is aligned with ``valid.json`` by index.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from posematch.data.boxes import PIXEL_STD
from posematch.data.topdown import (
    BadRecordError,
    Codec,
    Instance,
    TopDownDataset,
    check_finite,
    reject,
)
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import MPII as MPII_SPEC
from posematch.keypoints import KeypointSpec

log = logging.getLogger(__name__)


def mpii_instances(
    ann_file: str, image_dir: str, spec: KeypointSpec = MPII_SPEC, skip_bad: bool = False
) -> tuple[list[Instance], list[str]]:
    """Instances of an official-format MPII json, and the malformed records that were skipped."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"ann_file={ann_file}: annotation file not found")
    try:
        with open(ann_file) as f:
            records = json.load(f)
    except json.JSONDecodeError as err:
        raise BadRecordError(f"ann_file={ann_file}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise BadRecordError(f"{ann_file}: expected a JSON list of records")
    k = spec.num_keypoints
    instances: list[Instance] = []
    bad: list[str] = []
    for i, rec in enumerate(records):
        where = f"{ann_file} record #{i}"
        try:
            image = rec["image"]
            center = np.array(rec["center"], dtype=np.float64).reshape(2)
            scale = float(rec["scale"])
            if "joints" in rec:
                joints = np.array(rec["joints"], dtype=np.float64).reshape(k, 2)
                vis = np.array(rec["joints_vis"], dtype=np.int64).reshape(k)
            else:  # test split
                joints, vis = np.zeros((k, 2)), np.zeros(k, dtype=np.int64)
            if not isinstance(image, str) or not image:
                raise BadRecordError(f"{where}: 'image' is {image!r}, not a file name")
            check_finite(where, center=center, scale=scale, joints=joints)
            if not scale > 0:
                raise BadRecordError(f"{where}: 'scale' {scale} is not positive")
            if not np.isin(vis, (0, 1)).all():
                raise BadRecordError(f"{where}: 'joints_vis' {vis.tolist()} not in 0/1")
        except (KeyError, TypeError, ValueError) as err:  # BadRecordError is a ValueError
            reject(where, err, skip_bad, bad)
            continue
        scale_xy = np.array([scale, scale])
        if center[0] != -1:
            center[1] += 15 * scale_xy[1]
            scale_xy = scale_xy * 1.25
        center = center - 1
        joints = np.where(vis[:, None] > 0, joints - 1, 0.0)
        instances.append(
            Instance(
                image_path=os.path.join(image_dir, image),
                image_id=int(Path(image).stem) if Path(image).stem.isdigit() else i,
                center=center,
                scale=scale_xy,
                keypoints=joints,
                visible=vis,
                score=1.0,
                area=float(np.prod(scale_xy * PIXEL_STD)),
                record=f"{where} ({image})",
            )
        )
    return instances, bad


class MpiiKeypoints(TopDownDataset):
    """MPII top-down dataset.

    Args:
        ann_file: ``annot/{train,valid,test}.json``.
        image_dir: the ``images/`` folder.
        pipeline: crop and augmentation (official input 256x256).
        codec: target encoder.
        spec: keypoint description (default MPII 16).
        skip_bad: skip and count malformed records and unreadable images instead of raising.
        seed: base seed of the augmentation draws.
    """

    def __init__(
        self,
        ann_file: str,
        image_dir: str,
        pipeline: TopDownPipeline,
        codec: Codec,
        spec: KeypointSpec = MPII_SPEC,
        skip_bad: bool = False,
        seed: int = 0,
    ) -> None:
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image_dir={image_dir}: folder not found")
        self.ann_file = ann_file
        instances, bad = mpii_instances(ann_file, image_dir, spec, skip_bad)
        if bad:
            log.warning("%s: skipped %d malformed records", ann_file, len(bad))
        if not instances:
            raise BadRecordError(f"ann_file={ann_file}: no usable records")
        super().__init__(instances, pipeline, codec, skip_bad=skip_bad, seed=seed, bad_records=bad)
