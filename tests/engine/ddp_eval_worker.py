"""Worker of test_ddp_evaluation: evaluates a fixed random model on the COCO sample under torchrun.

Usage: torchrun --nproc_per_node N ddp_eval_worker.py OUT_DIR
Rank 0 writes OUT_DIR/metrics.json and OUT_DIR/predictions.npz.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posematch.codecs.dots import DotCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.transforms import TopDownPipeline
from posematch.engine import dist
from posematch.engine.evaluate import collect_predictions
from posematch.evaluation.coco import CocoKeypointEvaluator
from posematch.keypoints import COCO
from posematch.models.pose_model import TopDownModel
from tests.conftest import SHARED_DATA

ROOT = SHARED_DATA / "coco_sample"


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    return TopDownModel(backbone, nn.Conv2d(8, 17, 3, stride=2, padding=1))


def dataset() -> CocoKeypoints:
    return CocoKeypoints(
        str(ROOT / "test_coco.json"), str(ROOT), TopDownPipeline((48, 64), COCO),
        DotCodec((48, 64), (12, 16)), boxes="det",
        det_file=str(ROOT / "test_coco_det_AP_H_56.json"), det_score_thr=0.9,
    )  # fmt: skip


def run(out_dir: str) -> dict | None:
    device = dist.init()
    ds = dataset()
    merged = collect_predictions(tiny_model(), ds, ds.codec, device, batch_size=4,
                                 flip_perm=COCO.flip_permutation())  # fmt: skip
    metrics = None
    if merged is not None:
        evaluator = CocoKeypointEvaluator(str(ROOT / "test_coco.json"), out_dir)
        evaluator.process(merged)
        metrics = evaluator.evaluate()
        np.savez(Path(out_dir) / "predictions.npz", **dataclasses.asdict(merged))
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
    dist.shutdown()
    return metrics


if __name__ == "__main__":
    run(sys.argv[1])
