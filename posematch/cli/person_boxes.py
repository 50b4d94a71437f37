"""Where the person boxes of ``posematch-infer`` come from: a COCO detection results file or a
COCO annotation file (its ground-truth person boxes, score 1), a torchvision Faster R-CNN from
local weights (never downloaded), or the whole image.

Boxes are (N, 4) float64 ``(x, y, w, h)`` in image pixels with (N,) scores, as COCO writes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

log = logging.getLogger("posematch.infer")

PERSON = 1  # COCO person category id
Boxes = tuple[np.ndarray, np.ndarray]
Detector = Callable[[np.ndarray], Boxes]


def annotation_boxes(coco: dict, path: Path) -> list[dict]:
    """A COCO annotation file's person boxes as detections of score 1, named by their image's
    ``file_name`` (crowd regions left out: they are not one person)."""
    try:
        names = {int(im["id"]): str(im["file_name"]) for im in coco.get("images", [])}
        dets = []
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            image_id = int(ann["image_id"])
            if image_id not in names:
                raise ValueError(f"annotation {ann.get('id')}: image_id {image_id} not in images")
            dets.append(
                {
                    "file_name": names[image_id],
                    "category_id": ann.get("category_id", PERSON),
                    "bbox": ann["bbox"],
                    "score": 1.0,
                }
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"boxes={path}: not a usable COCO annotation file ({err})") from err
    return dets


class BoxFile:
    """Person boxes of a COCO detection results file (``[{image_id, category_id, bbox, score}]``)
    or of a COCO annotation file (``{images, annotations}``: the ground-truth boxes, score 1),
    looked up by file name or by numeric image id."""

    def __init__(self, path: str | Path, score_thr: float) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"boxes={path}: detection file not found")
        try:
            dets = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"boxes={path}: not a readable JSON file ({err})") from err
        if isinstance(dets, dict) and "annotations" in dets:
            dets = annotation_boxes(dets, self.path)
        if not isinstance(dets, list):
            raise ValueError(
                f"boxes={path}: expected a JSON list of detections or a COCO annotation file "
                "(images, annotations)"
            )
        self.by_name: dict[str, list[tuple[list[float], float]]] = {}
        self.by_id: dict[int, list[tuple[list[float], float]]] = {}
        self.used = 0
        below: list[float] = []  # scores of the person boxes under score_thr
        for i, det in enumerate(dets):
            try:
                if int(det.get("category_id", PERSON)) != PERSON:
                    continue
                entry = ([float(v) for v in det["bbox"]], float(det["score"]))
                if len(entry[0]) != 4:
                    raise ValueError(f"bbox has {len(entry[0])} values, not 4")
                if not np.isfinite([*entry[0], entry[1]]).all():  # NaN passes every comparison
                    raise ValueError(f"bbox {entry[0]} / score {entry[1]} not finite")
                if entry[1] < score_thr:
                    below.append(entry[1])
                    continue
                if entry[0][2] <= 0 or entry[0][3] <= 0:
                    continue  # an empty box has no crop
                if "file_name" in det:
                    self.by_name.setdefault(Path(det["file_name"]).name, []).append(entry)
                else:
                    self.by_id.setdefault(int(det["image_id"]), []).append(entry)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise ValueError(f"boxes={path}: detection #{i} is malformed ({err})") from err
        if below and not self.by_name and not self.by_id:
            raise ValueError(
                f"boxes={path}: every person detection ({len(below)}) scores below "
                f"det_score_thr={score_thr} (the highest scores {max(below):.3g}); lower "
                "det_score_thr to use them"
            )

    def lookup(self, file_name: str, number: int | None) -> Boxes:
        """Boxes of the image ``file_name`` (numeric stem / frame index ``number``, if any)."""
        found = list(self.by_name.get(file_name, []))
        if number is not None:
            found += self.by_id.get(number, [])
        self.used += len(found)
        return (
            np.array([b for b, _ in found], dtype=np.float64).reshape(-1, 4),
            np.array([s for _, s in found], dtype=np.float64),
        )


def whole_image(image: np.ndarray) -> Boxes:
    """The whole image as one box of score 1 (pixel centres 0 .. W-1, 0 .. H-1)."""
    h, w = image.shape[:2]
    return np.array([[0.0, 0.0, w - 1.0, h - 1.0]]), np.ones(1)


def torchvision_weight_files() -> dict[str, str]:
    """File names of torchvision's COCO Faster R-CNN R50-FPN weights -> ``"v1"`` / ``"v2"``."""
    from torchvision.models.detection import (
        FasterRCNN_ResNet50_FPN_V2_Weights,
        FasterRCNN_ResNet50_FPN_Weights,
    )

    return {
        Path(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url).name: "v1",
        Path(FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url).name: "v2",
    }


def find_detector_weights() -> Path | None:
    """torchvision's Faster R-CNN weights in the torch hub checkpoints cache, if present."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in torchvision_weight_files():
        if (cache / name).is_file():
            return cache / name
    return None


def torchvision_detector(weights: str | Path, device: torch.device, score_thr: float) -> Detector:
    """A Faster R-CNN R50-FPN (v1 or v2, told apart by its keys) from a local weights file, as a
    function BGR image -> person boxes (x, y, w, h) with ``score >= score_thr``."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2

    state = torch.load(weights, map_location="cpu", weights_only=True)
    v2 = any(k.startswith("roi_heads.box_head.0.") for k in state)  # v1: box_head.fc6 / fc7
    build = fasterrcnn_resnet50_fpn_v2 if v2 else fasterrcnn_resnet50_fpn
    model = build(weights=None, weights_backbone=None, num_classes=91)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"detector_weights={weights}: not Faster R-CNN R50-FPN COCO weights ({err})"
        ) from err
    model.eval().to(device)

    @torch.no_grad()
    def detect(image: np.ndarray) -> Boxes:
        rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)
        out = model([rgb.to(device, torch.float32) / 255.0])[0]
        size = out["boxes"][:, 2:] - out["boxes"][:, :2]
        keep = (out["labels"] == PERSON) & (out["scores"] >= score_thr) & (size > 0).all(1)
        xyxy = out["boxes"][keep].double().cpu().numpy()
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        return xywh, out["scores"][keep].double().cpu().numpy()

    return detect


def load_detector(cfg: DictConfig, device: torch.device) -> Detector | None:
    """The person detector asked for by ``detector`` / ``detector_weights``, or None."""
    mode = cfg.detector
    if mode not in ("auto", "none", "torchvision"):
        raise ValueError(f"detector={mode!r}: expected auto, none or torchvision")
    if mode == "none":
        return None
    weights: Path | None
    if cfg.detector_weights:
        weights = Path(cfg.detector_weights)
        if not weights.is_file():
            raise FileNotFoundError(f"detector_weights={weights}: file not found")
    else:
        weights = find_detector_weights()
    if weights is None:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        if mode == "torchvision":
            names = " or ".join(torchvision_weight_files())
            raise FileNotFoundError(
                f"detector=torchvision: no weights; set detector_weights=path/to/{names} or put it "
                f"in {cache} (nothing is downloaded)"
            )
        return None  # the caller says so, once, with what it does instead
    log.info("person detector: Faster R-CNN from %s", weights)
    return torchvision_detector(weights, device, cfg.det_score_thr)
