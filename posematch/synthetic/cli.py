"""``python -m posematch.synthetic``: write a synthetic figure dataset (COCO-format train, val,
held-out test and pretraining splits) for the demo, the study and the tests."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from posematch.synthetic.writer import generate


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m posematch.synthetic --out DIR --train N --val M [--test T]
    [--pretrain P] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m posematch.synthetic",
        description=__doc__.split(": ", 1)[1].replace("\n", " "),
    )
    parser.add_argument("--out", required=True, help="dataset root, e.g. data/synthetic")
    parser.add_argument("--train", type=int, required=True, help="number of training images")
    parser.add_argument("--val", type=int, required=True, help="number of validation images")
    parser.add_argument("--test", type=int, default=0, help="held-out test images (default 0)")
    parser.add_argument("--pretrain", type=int, default=0, help="pretraining images (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the draw (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate(
        args.out,
        args.train,
        args.val,
        args.seed,
        workers=args.workers,
        num_test=args.test,
        num_pretrain=args.pretrain,
    )
    print(
        f"wrote {args.train} train + {args.val} val + {args.test} test + {args.pretrain} pretrain "
        f"images to {out} "
        f"in {time.perf_counter() - start:.1f} s (seed {args.seed})"
    )
