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
from collections import Counter

import numpy as np
from pycocotools.coco import COCO

from posematch.data.boxes import PIXEL_STD, box_to_center_scale
from posematch.data.topdown import (
    BadRecordError,
    Codec,
    Instance,
    TopDownDataset,
    check_box_size,
    check_finite,
    reject,
)
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO as COCO_SPEC
from posematch.keypoints import KeypointSpec

log = logging.getLogger(__name__)
PERSON = 1


def load_coco(ann_file: str) -> COCO:
    """pycocotools COCO, quietly; a clear error naming the file when it is missing or not JSON."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"ann_file={ann_file}: annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(ann_file)
    except json.JSONDecodeError as err:
        raise BadRecordError(f"ann_file={ann_file}: not valid JSON ({err})") from err
    except (KeyError, TypeError) as err:
        raise BadRecordError(f"ann_file={ann_file}: not a COCO annotation file ({err!r})") from err
    for section in ("images", "annotations"):  # pycocotools keeps one record per id, silently
        counts = Counter(record.get("id") for record in coco.dataset.get(section, []))
        repeated = sorted((i for i, n in counts.items() if n > 1), key=str)
        if repeated:
            raise BadRecordError(
                f"ann_file={ann_file}: {section} ids {repeated[:5]} occur more than once "
                f"({len(repeated)} ids): every id must be unique"
            )
    return coco


def _image_path(coco: COCO, image_dir: str, image_id: int) -> str:
    return os.path.join(image_dir, coco.imgs[image_id]["file_name"])


def _image_size(coco: COCO, image_id: int) -> tuple[int, int] | None:
    """(width, height) the file gives for the image, checked against the decoded pixels."""
    info = coco.imgs[image_id]
    if "width" not in info or "height" not in info:
        return None
    return int(info["width"]), int(info["height"])


def _gt_instance(
    coco: COCO, image_dir: str, image_id: int, ann: dict, aspect_ratio: float, k: int, record: str
) -> Instance | None:
    """One ground-truth annotation as an Instance; None where the official code drops it (not a
    person, crowd, no area, no labelled keypoint); BadRecordError when it is malformed."""
    if ann.get("category_id") != PERSON or ann.get("iscrowd", 0):
        return None
    try:
        kpts = np.asarray(ann["keypoints"], dtype=np.float64)
        x, y, w, h = (float(v) for v in ann["bbox"])
        area = float(ann["area"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadRecordError(f"{record}: malformed record ({err!r})") from err
    if kpts.shape != (3 * k,):
        raise BadRecordError(f"{record}: 'keypoints' has {kpts.size} values, not {3 * k}")
    check_finite(record, keypoints=kpts, bbox=(x, y, w, h), area=area)
    kpts = kpts.reshape(k, 3)
    if not np.isin(kpts[:, 2], (0, 1, 2)).all():
        raise BadRecordError(f"{record}: 'keypoints' visibility flags {kpts[:, 2]} not in 0/1/2")
    if area <= 0 or kpts[:, 2].max() <= 0:  # the official filters: silent, as published
        return None
    check_box_size(record, w, h)
    info = coco.imgs[image_id]
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(info["width"] - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(info["height"] - 1.0, y1 + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1:
        raise BadRecordError(f"{record}: 'bbox' {[x, y, w, h]} lies outside the image")
    center, scale = box_to_center_scale((x1, y1, x2 - x1, y2 - y1), aspect_ratio)
    if not (scale > 0).all():  # a one-pixel box clips to zero extent on both axes
        raise BadRecordError(f"{record}: 'bbox' {[x, y, w, h]} has no extent inside the image")
    return Instance(
        image_path=_image_path(coco, image_dir, image_id),
        image_id=int(image_id),
        center=center,
        scale=scale,
        keypoints=kpts[:, :2].copy(),
        visible=kpts[:, 2].astype(np.int64),
        score=1.0,
        area=float(np.prod(scale * PIXEL_STD)),
        record=record,
        image_size=_image_size(coco, image_id),
    )


def gt_instances(
    coco: COCO,
    image_dir: str,
    aspect_ratio: float,
    spec: KeypointSpec,
    ann_file: str = "",
    skip_bad: bool = False,
) -> tuple[list[Instance], list[str]]:
    """Instances from ground-truth boxes, and the list of malformed records that were skipped.

    Malformed: a field missing or of the wrong type, a non-finite value, visibility outside 0/1/2,
    a box without extent, an ``image_id`` absent from ``images``. Each raises ``BadRecordError``
    naming the file and the annotation id, or with ``skip_bad`` is skipped and listed.
    """
    k = spec.num_keypoints
    instances: list[Instance] = []
    bad: list[str] = []

    for image_id in sorted(set(coco.imgToAnns) - set(coco.imgs), key=str):
        for ann in coco.imgToAnns[image_id]:
            record = f"{ann_file} annotation id {ann.get('id')}"
            err = BadRecordError(f"{record}: image_id {image_id} is not in 'images'")
            reject(record, err, skip_bad, bad)
    for image_id in sorted(coco.imgs):
        for ann in coco.imgToAnns.get(image_id, []):
            record = f"{ann_file} annotation id {ann.get('id')} (image {image_id})"
            try:
                inst = _gt_instance(coco, image_dir, image_id, ann, aspect_ratio, k, record)
            except BadRecordError as err:
                reject(record, err, skip_bad, bad)
                continue
            if inst is not None:
                instances.append(inst)
    return instances, bad


def det_instances(
    coco: COCO,
    image_dir: str,
    det_file: str,
    aspect_ratio: float,
    spec: KeypointSpec,
    score_thr: float = 0.0,
    skip_bad: bool = False,
) -> tuple[list[Instance], list[str]]:
    """Instances from a person-detection results file (COCO results format), and the malformed
    detections that were skipped (``skip_bad``; otherwise each raises ``BadRecordError``)."""
    if not os.path.isfile(det_file):
        raise FileNotFoundError(f"det_file={det_file}: detection results file not found")
    try:
        with open(det_file) as f:
            dets = json.load(f)
    except json.JSONDecodeError as err:
        raise BadRecordError(f"det_file={det_file}: not valid JSON ({err})") from err
    if not isinstance(dets, list):
        raise BadRecordError(f"{det_file}: expected a JSON list of detections")
    k = spec.num_keypoints
    instances: list[Instance] = []
    bad: list[str] = []
    for i, det in enumerate(dets):
        record = f"{det_file} detection #{i}"
        try:
            if det["category_id"] != PERSON:
                continue
            score = float(det["score"])
            image_id = int(det["image_id"])
            x, y, w, h = (float(v) for v in det["bbox"])
            check_finite(record, bbox=(x, y, w, h), score=score)
            if score < score_thr:
                continue
            check_box_size(record, w, h)
            if image_id not in coco.imgs:
                raise BadRecordError(f"{record}: image_id {image_id} is not in the annotation file")
            center, scale = box_to_center_scale((x, y, w, h), aspect_ratio)
        except (KeyError, TypeError, ValueError) as err:  # BadRecordError is a ValueError
            reject(record, err, skip_bad, bad, "detection")
            continue
        instances.append(
            Instance(
                image_path=_image_path(coco, image_dir, image_id),
                image_id=image_id,
                center=center,
                scale=scale,
                keypoints=np.zeros((k, 2)),
                visible=np.ones(k, dtype=np.int64),
                score=score,
                area=float(np.prod(scale * PIXEL_STD)),
                record=record,
                image_size=_image_size(coco, image_id),
            )
        )
    return instances, bad


def _count(det_file: str) -> int:
    """Records in a detection file already read once (for the message of an empty result)."""
    with open(det_file) as f:
        return len(json.load(f))


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
        if boxes == "gt":
            instances, bad = gt_instances(self.coco, image_dir, ratio, spec, ann_file, skip_bad)
        else:
            if det_file is None:
                raise ValueError("det_file: required when boxes='det'")
            instances, bad = det_instances(
                self.coco, image_dir, det_file, ratio, spec, det_score_thr, skip_bad
            )
        if bad:
            log.warning("%s: skipped %d malformed records", det_file or ann_file, len(bad))
        if not instances and boxes == "det":
            assert det_file is not None  # required above
            raise BadRecordError(
                f"data.det_file={det_file}: no usable person detection (of {_count(det_file)} "
                f"records, none is a person box with score >= det_score_thr={det_score_thr} on an "
                f"image of ann_file={ann_file})"
            )
        if not instances:
            raise BadRecordError(f"ann_file={ann_file}: no usable person instances ({boxes} boxes)")
        super().__init__(instances, pipeline, codec, skip_bad=skip_bad, seed=seed, bad_records=bad)
