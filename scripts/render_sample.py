"""Render samples drawn from the training pipeline, with their keypoints, to PNG files.

Shows what the network is fed: the augmented crop (de-normalised) with the skeleton drawn from the
crop-space keypoints, labelled joints only (visible: filled dot; labelled but hidden: ring). Left
joints are drawn in one colour and right joints in another, so a wrong flip pairing shows at a glance.

Usage: python scripts/render_sample.py --ann ANN.json --images DIR --out OUT_DIR [--count 8]
       [--dataset coco|mpii] [--train/--no-train] [--seed S]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from posematch.codecs.dots import DotCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.mpii import MpiiKeypoints
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO, MPII, KeypointSpec
from posematch.types import Sample

LEFT, RIGHT, CENTRE = (0, 200, 255), (255, 120, 0), (60, 220, 60)  # BGR


def joint_colour(spec: KeypointSpec, j: int) -> tuple[int, int, int]:
    name = spec.names[j]
    if name.startswith(("left", "l_")):
        return LEFT
    if name.startswith(("right", "r_")):
        return RIGHT
    return CENTRE


def draw(sample: Sample, spec: KeypointSpec, color: str, scale: int = 2) -> np.ndarray:
    """(H*scale, W*scale, 3) uint8 BGR picture of one sample."""
    img = sample.image.permute(1, 2, 0).numpy()  # uint8, the pipeline's channel order
    img = np.ascontiguousarray(img[..., ::-1] if color == "rgb" else img)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    kpts = sample.keypoints.numpy() * scale + (scale - 1) / 2  # pixel centres after upscaling
    labelled = sample.target_weight.numpy() > 0
    for a, b in spec.skeleton:
        if labelled[a] and labelled[b]:
            pa, pb = (tuple(round(float(v)) for v in kpts[j]) for j in (a, b))
            cv2.line(img, pa, pb, joint_colour(spec, b), 2, cv2.LINE_AA)
    for j in np.flatnonzero(labelled):
        p = tuple(round(float(v)) for v in kpts[j])
        cv2.circle(img, p, 4, joint_colour(spec, j), -1, cv2.LINE_AA)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="coco", choices=["coco", "mpii"])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = COCO if args.dataset == "coco" else MPII
    size = (192, 256) if args.dataset == "coco" else (256, 256)
    pipeline = TopDownPipeline(size, spec, train=args.train)
    codec = DotCodec(size, (size[0] // 4, size[1] // 4))
    cls = CocoKeypoints if args.dataset == "coco" else MpiiKeypoints
    ds = cls(args.ann, args.images, pipeline, codec, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(min(args.count, len(ds))):
        sample = ds[i]
        path = out / f"sample_{i:03d}_{sample.image_id}.png"
        cv2.imwrite(str(path), draw(sample, spec, pipeline.color))
        print(path)


if __name__ == "__main__":
    main()
