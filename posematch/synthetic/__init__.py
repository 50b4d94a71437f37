"""The embedded synthetic dataset: articulated stick-and-silhouette people, written in COCO format.

``generate(out_dir, num_train, num_val, seed, num_test=0, num_pretrain=0)`` (or ``python -m
posematch.synthetic --out DIR --train N --val M [--test T] [--pretrain P] [--seed S]``) writes
the COCO person-keypoint layout (Lin et al. 2014)::

    DIR/annotations/person_keypoints_train2017.json   DIR/train2017/000000000001.jpg ...
    DIR/annotations/person_keypoints_val2017.json     DIR/val2017/000000000001.jpg ...
    DIR/annotations/person_keypoints_test2017.json    DIR/test2017/...      (held out, optional)
    DIR/annotations/person_keypoints_pretrain2017.json DIR/pretrain2017/... (optional)

Each split is its own independent draw (its own seed stream): ``test`` is the held-out split that
no choice may look at; ``pretrain`` is a separate split for pretraining a backbone, standing in for
ImageNet in the paper's protocol.

which pycocotools reads and ``COCOeval(iouType="keypoints")`` scores. Each image (256-320 px a side)
holds 1-3 frontal figures with the 17 COCO joints (``posematch.keypoints.COCO``): limb lengths in
human proportions of the figure height (70-220 px), random joint angles, colours and limb thickness,
the person's left limbs lighter and on the image's right, the right limbs darker, on a textured
background (gradient or smooth noise, blurred shapes, sensor noise), saved as JPEG (quality 90).

Units and conventions:
- Coordinates are image pixels with pixel (row i, col j) centred at (x=j, y=i); keypoints are floats
  rounded to 0.01 px and the figures are drawn at 1/16 px precision (cv2 ``shift=4``, anti-aliased).
- Visibility: 2 visible; 1 labelled but covered by a later-drawn figure or by an occluder (the pixel
  holding the joint, ``floor(x + 0.5), floor(y + 0.5)``); 0 outside the image, i.e. in no pixel
  (outside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``), stored as ``x = y = v = 0`` as COCO does.
- ``bbox = [x, y, w, h]``: first column and row of the figure's whole drawn silhouette (occluded parts
  included) clipped to the image, and its width and height in pixels (so ``x + w - 1`` is the last
  column, the convention of the official COCO loaders). ``area``: number of silhouette pixels in the
  image, the segmentation area COCO's OKS uses. ``num_keypoints``: joints with ``v > 0``.
- A figure with fewer than 3 labelled joints or a box under 12 px is re-placed, never drawn unlabelled.

Every image depends only on ``(seed, split, index)`` (a ``numpy`` Generator each), so the output is
byte-identical for a seed whatever the number of worker processes.
"""

from posematch.synthetic.cli import main
from posematch.synthetic.figures import Person, SyntheticConfig
from posematch.synthetic.scene import synthesize
from posematch.synthetic.writer import generate

__all__ = ["Person", "SyntheticConfig", "generate", "main", "synthesize"]
