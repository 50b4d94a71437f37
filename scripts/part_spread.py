"""Does a trained run tell its parts apart? Per joint, the spread of its decoded positions over the
held-out split against the spread of the targets, and its mean error (issue 13).

    python scripts/part_spread.py RUN [--checkpoint last.pth]

RUN is a ``posematch-train`` run folder (its ``config.yaml`` and checkpoint). Each validation item is
decoded without the flip test by the run's codec, in heatmap pixels. Joints whose predictions share
one spread (and one position) have collapsed onto one point. ``results/imagenet_study.md`` shows
such a collapse of a matching-loss model.

Then the head's last layer (``head.final_layer``, one weight row per joint): the norm of each row,
the norm of the rows' mean (the part every joint shares) and of each row's difference from it, and
the cosine between rows. A merged group of joints has rows of cosine ~1: a common part much larger
than the differences (``results/relu.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from posematch.models.checkpoints import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="last.pth")
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run / "config.yaml")
    cfg.model.pretrained = None
    cfg.model.init_from = None
    model = instantiate(cfg.model)
    load_checkpoint(model, args.run / args.checkpoint)
    model.eval()
    codec = instantiate(cfg.codec)
    dataset = instantiate(cfg.data.val)
    stride = codec.geometry.input_size[0] / codec.geometry.heatmap_size[0]
    preds, targets, used = [], [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            decoded = codec.decode(model(sample.image[None]))
            preds.append(decoded.keypoints[0].numpy())
            targets.append(sample.keypoints.numpy() / stride)
            used.append(sample.target_weight.numpy() > 0)
    p, t, u = np.array(preds), np.array(targets), np.array(used)
    names = instantiate(cfg.data.spec).names
    print("| joint | target sd x, y | predicted sd x, y | mean error (heatmap px) |")
    print("|---|---:|---:|---:|")
    for k, name in enumerate(names):
        m = u[:, k]
        err = np.hypot(*(p[m, k] - t[m, k]).T).mean()
        tsd, psd = t[m, k].std(0), p[m, k].std(0)
        print(f"| {name} | {tsd[0]:.2f}, {tsd[1]:.2f} | {psd[0]:.2f}, {psd[1]:.2f} | {err:.2f} |")  # fmt: skip
    print()
    print(last_layer_table(model, names))


def last_layer_table(model: torch.nn.Module, names: list[str]) -> str:
    """Markdown: per joint the norm of its last-layer row, of its difference from the mean row, and
    its cosine with every other row."""
    rows = model.head.final_layer.weight.detach().flatten(1).double()
    common = rows.mean(0)
    unit = torch.nn.functional.normalize(rows, dim=1)
    cos = unit @ unit.T
    lines = [
        f"mean row norm (shared by all joints): {common.norm():.3f}",
        "",
        "| joint | row norm | norm of row - mean row | "
        + " | ".join(f"cos {n}" for n in names)
        + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for k, name in enumerate(names):
        cells = " | ".join(f"{v:.3f}" for v in cos[k].tolist())
        lines.append(
            f"| {name} | {rows[k].norm():.3f} | {(rows[k] - common).norm():.3f} | {cells} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
