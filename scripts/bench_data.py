"""Benchmark of the training data pipeline, one worker (this process), at 256x192 input.

Measures samples per second of ``TopDownDataset.__getitem__`` (read, half-body / scale / rotation /
flip draws, warpAffine, normalisation, target encoding) against the bare floor of the same work:
``cv2.imread`` + ``cv2.warpAffine`` of the very same crops (the matrices the augmentation drew),
timed in the same run. Datasets: the real COCO
sample in ../shared/data and the synthetic dataset (generated into data/synthetic when missing).
Targets: at least 70% of the bare throughput (issue 2), 90% (issue 10). Exit code 0: a report.

Usage: python scripts/bench_data.py [--samples N] [--codec dots|gaussian]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from posematch.codecs.dots import DotCodec
from posematch.codecs.gaussian import GaussianHeatmapCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.topdown import TopDownDataset
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO

REPO = Path(__file__).resolve().parents[1]
INPUT = (192, 256)


def coco_sample(pipeline: TopDownPipeline, codec) -> TopDownDataset:
    root = REPO.parent / "shared" / "data" / "coco_sample"
    if not root.is_dir():  # a clone outside the workplace folder
        root = Path(os.environ.get("POSEMATCH_SHARED_DATA", "/work/shared/data")) / "coco_sample"
    return CocoKeypoints(str(root / "test_coco.json"), str(root), pipeline, codec)


def synthetic(pipeline: TopDownPipeline, codec) -> TopDownDataset:
    root = REPO / "data" / "synthetic"
    ann = root / "annotations" / "person_keypoints_train2017.json"
    if not ann.exists():
        from posematch.synthetic import generate

        print(f"generating {root} (300 train, 50 val images)")
        generate(str(root), 300, 50, seed=0)
    return CocoKeypoints(str(ann), str(root / "train2017"), pipeline, codec)


def pipeline_rate(ds: TopDownDataset, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - start)


def crop_matrices(ds: TopDownDataset, n: int) -> list[np.ndarray]:
    """The image -> input matrices the pipeline used for items 0..n-1 (augmentation included)."""
    mats = []
    for i in range(n):
        inverse = np.vstack([ds[i % len(ds)].inverse, [0.0, 0.0, 1.0]])
        mats.append(np.linalg.inv(inverse)[:2])
    return mats


def bare_rate(ds: TopDownDataset, mats: list[np.ndarray]) -> float:
    """imread + warpAffine of the very crops the pipeline made: the least any pipeline must do."""
    n = len(mats)
    start = time.perf_counter()
    for i in range(n):
        inst = ds.instances[i % len(ds)]
        image = cv2.imread(inst.image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        cv2.warpAffine(image, mats[i], INPUT, flags=cv2.INTER_LINEAR)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--codec", default="dots", choices=["dots", "gaussian"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # one data worker = one thread
    cv2.setNumThreads(1)
    heatmap = (INPUT[0] // 4, INPUT[1] // 4)
    codec = (
        DotCodec(INPUT, heatmap) if args.codec == "dots" else GaussianHeatmapCodec(INPUT, heatmap)
    )
    pipeline = TopDownPipeline(INPUT, COCO, train=True)
    print(f"one worker, input {INPUT[1]}x{INPUT[0]}, codec {args.codec}, {args.samples} samples")
    for name, build in (("coco_sample", coco_sample), ("synthetic", synthetic)):
        ds = build(pipeline, codec)
        # Interleaved rounds, best of each: both see the same cache and machine load.
        mats = crop_matrices(ds, args.samples // 5)
        rounds = [(bare_rate(ds, mats), pipeline_rate(ds, len(mats))) for _ in range(5)]
        bare = max(r[0] for r in rounds)
        ours = max(r[1] for r in rounds)
        ratio = ours / bare
        verdict = "PASS" if ratio >= 0.9 else "FAIL"
        print(
            f"{name:>12}: pipeline {ours:7.1f} samples/s, bare imread+warpAffine {bare:7.1f}/s, "
            f"ratio {ratio:.2f} (target >= 0.90) {verdict}"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
