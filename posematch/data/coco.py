"""COCO person keypoints, top-down (Lin et al. 2014; SimpleBaseline / HRNet protocol).

Layout: ``annotations/person_keypoints_{split}.json`` and ``{split}/`` images, read with pycocotools.
Instances come from
- ground-truth boxes, sanitised as the official code does: box clipped to the image
  (x2 = min(W - 1, x1 + max(0, w - 1)), same for y), positive area, category person, not crowd, and
  at least one labelled keypoint; or
- person detections (``[{image_id, category_id, bbox, score}]``, COCO results format): person category
  only, score >= ``det_score_thr`` (official 0.0); keypoints unknown. The published numbers use
  ``COCO_val2017_detections_AP_H_56_person.json`` and ``COCO_test-dev2017_detections_AP_H_609_person.json``
  (test-dev has images but no keypoint annotations: pass its image-info file as ``ann_file``).
Box -> centre/scale with the input aspect ratio and 1.25 padding (``posematch.data.boxes``).
Visibility keeps COCO's 0/1/2 (targets use > 0).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os

import numpy as np
from pycocotools.coco import COCO

from posematch.data.boxes import PIXEL_STD, box_to_center_scale
from posematch.data.keypoints import COCO as COCO_SPEC
from posematch.data.keypoints import KeypointSpec
from posematch.data.topdown import BadRecordError, Codec, Instance, TopDownDataset
from posematch.data.transforms import TopDownPipeline

log = logging.getLogger(__name__)
PERSON = 1


def load_coco(ann_file: str) -> COCO:
    """pycocotools COCO, quietly; a clear error when the file is missing."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"ann_file={ann_file}: annotation file not found")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(ann_file)


def _image_path(coco: COCO, image_dir: str, image_id: int) -> str:
    return os.path.join(image_dir, coco.imgs[image_id]["file_name"])


def gt_instances(
    coco: COCO,
    image_dir: str,
    aspect_ratio: float,
    spec: KeypointSpec,
    ann_file: str = "",
    skip_bad: bool = False,
) -> tuple[list[Instance], list[str]]:
    """Instances from ground-truth boxes, and the list of malformed records that were skipped."""
    k = spec.num_keypoints
    instances: list[Instance] = []
    bad: list[str] = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        width, height = info["width"], info["height"]
        for ann in coco.imgToAnns.get(image_id, []):
            record = f"{ann_file} annotation id {ann.get('id')} (image {image_id})"
            try:
                if ann.get("category_id") != PERSON or ann.get("iscrowd", 0):
                    continue
                kpts = np.asarray(ann["keypoints"], dtype=np.float64)
                if kpts.shape != (3 * k,):
                    raise BadRecordError(
                        f"{record}: 'keypoints' has {kpts.size} values, not {3 * k}"
                    )
                x, y, w, h = (float(v) for v in ann["bbox"])
                area = float(ann["area"])
            except (KeyError, TypeError, ValueError) as err:
                if not skip_bad:
                    raise BadRecordError(f"{record}: malformed record ({err})") from err
                bad.append(record)
                continue
            x1, y1 = max(0.0, x), max(0.0, y)
            x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
            y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
            kpts = kpts.reshape(k, 3)
            if area <= 0 or x2 < x1 or y2 < y1 or kpts[:, 2].max() <= 0:
                continue
            center, scale = box_to_center_scale((x1, y1, x2 - x1, y2 - y1), aspect_ratio)
            instances.append(
                Instance(
                    image_path=_image_path(coco, image_dir, image_id),
                    image_id=int(image_id),
                    center=center,
                    scale=scale,
                    keypoints=kpts[:, :2].copy(),
                    visible=kpts[:, 2].astype(np.int64),
                    score=1.0,
                    area=float(np.prod(scale * PIXEL_STD)),
                    record=record,
                )
            )
    return instances, bad


def det_instances(
    coco: COCO,
    image_dir: str,
    det_file: str,
    aspect_ratio: float,
    spec: KeypointSpec,
    score_thr: float = 0.0,
) -> list[Instance]:
    """Instances from a person-detection results file (COCO results format)."""
    if not os.path.isfile(det_file):
        raise FileNotFoundError(f"det_file={det_file}: detection results file not found")
    with open(det_file) as f:
        dets = json.load(f)
    if not isinstance(dets, list):
        raise BadRecordError(f"{det_file}: expected a JSON list of detections")
    k = spec.num_keypoints
    instances = []
    for i, det in enumerate(dets):
        try:
            if det["category_id"] != PERSON or det["score"] < score_thr:
                continue
            image_id = int(det["image_id"])
            center, scale = box_to_center_scale(det["bbox"], aspect_ratio)
        except (KeyError, TypeError, ValueError) as err:
            raise BadRecordError(f"{det_file}: detection #{i} is malformed ({err})") from err
        if image_id not in coco.imgs:
            raise BadRecordError(f"{det_file}: detection #{i} names unknown image_id {image_id}")
        instances.append(
            Instance(
                image_path=_image_path(coco, image_dir, image_id),
                image_id=image_id,
                center=center,
                scale=scale,
                keypoints=np.zeros((k, 2)),
                visible=np.ones(k, dtype=np.int64),
                score=float(det["score"]),
                area=float(np.prod(scale * PIXEL_STD)),
                record=f"{det_file} detection #{i}",
            )
        )
    return instances


class CocoKeypoints(TopDownDataset):
    """COCO top-down dataset.

    Args:
        ann_file: ``person_keypoints_{split}.json`` (or an image-info file for test-dev).
        image_dir: folder of the split's images.
        pipeline: crop and augmentation.
        codec: target encoder.
        boxes: ``"gt"`` or ``"det"``.
        det_file: detection results (required when ``boxes="det"``).
        det_score_thr: drop detections below this score (official 0.0).
        spec: keypoint description (default COCO 17).
        skip_bad: skip and count malformed records and unreadable images instead of raising.
        seed: base seed of the augmentation draws.
    """

    def __init__(
        self,
        ann_file: str,
        image_dir: str,
        pipeline: TopDownPipeline,
        codec: Codec,
        boxes: str = "gt",
        det_file: str | None = None,
        det_score_thr: float = 0.0,
        spec: KeypointSpec = COCO_SPEC,
        skip_bad: bool = False,
        seed: int = 0,
    ) -> None:
        if boxes not in ("gt", "det"):
            raise ValueError(f"boxes={boxes!r}: expected 'gt' or 'det'")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image_dir={image_dir}: folder not found")
        self.ann_file = ann_file
        self.coco = load_coco(ann_file)
        ratio = pipeline.aspect_ratio
        self.bad_records: list[str] = []
        if boxes == "gt":
            instances, self.bad_records = gt_instances(
                self.coco, image_dir, ratio, spec, ann_file, skip_bad
            )
            if self.bad_records:
                log.warning("%s: skipped %d malformed records", ann_file, len(self.bad_records))
        else:
            if det_file is None:
                raise ValueError("det_file: required when boxes='det'")
            instances = det_instances(self.coco, image_dir, det_file, ratio, spec, det_score_thr)
        super().__init__(instances, pipeline, codec, skip_bad=skip_bad, seed=seed)
