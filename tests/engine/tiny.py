"""Small, fast pieces shared by the engine tests and their torchrun workers."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posematch.codecs.dots import DotCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO
from posematch.models.pose_model import TopDownModel
from posematch.synthetic import generate

INPUT, HEATMAP = (32, 48), (8, 12)


def tiny_model(seed: int = 0) -> nn.Module:
    """A BatchNorm-free stride-4 network, so DDP shards compute exactly what one process does;
    wrapped in TopDownModel, which normalises the pipeline's uint8 crops."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    return TopDownModel(backbone, nn.Conv2d(8, 17, 3, stride=2, padding=1))


def synthetic_set(root: Path, num_train: int = 12) -> CocoKeypoints:
    ann = root / "annotations" / "person_keypoints_train2017.json"
    if not ann.exists():
        generate(str(root), num_train, 2, seed=0, workers=1)
    pipe = TopDownPipeline(INPUT, COCO, train=True)
    return CocoKeypoints(str(ann), str(root / "train2017"), pipe, DotCodec(INPUT, HEATMAP))


def synthetic_val_set(root: Path) -> tuple[CocoKeypoints, str]:
    """The validation split written beside ``synthetic_set(root)`` (call that first), as the
    evaluation pipeline reads it, and its annotation file (for the evaluator)."""
    ann = str(root / "annotations" / "person_keypoints_val2017.json")
    pipe = TopDownPipeline(INPUT, COCO)
    return CocoKeypoints(ann, str(root / "val2017"), pipe, DotCodec(INPUT, HEATMAP)), ann
