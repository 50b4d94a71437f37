"""Predicted heatmaps of trained runs on one validation sample, overlaid on the input crop.

In the spirit of Fig. 3 of Qu et al., *Heatmap Distribution Matching for Human Pose Estimation*,
NeurIPS 2022 (matching-loss heatmaps against MSE heatmaps).

    python scripts/plot_heatmaps.py --runs outputs/train/sinkhorn_run outputs/train/mse_run \\
        [--index 0] [--joints left_wrist left_elbow left_knee left_ankle] [--relu] [--flip] \\
        [--checkpoint auto|best|last] [--data-root data/synthetic] [--device cpu] \\
        [--out results/fig3_heatmaps.png]

Run it from the repository root: a run's saved config names its data root as given at training time,
usually relative (``data/synthetic``), and relative paths are read from the current directory.
``--data-root`` replaces ``data.root`` of every run (only paths built from ``data.root`` follow).

One row per run (labelled by the loss of its saved ``.hydra/config.yaml`` and the run folder), one
column for the input crop and one per joint. Each run is rebuilt from its saved config
(``posematch.predictor.saved_config`` / ``posematch.build.build_run``; weights from ``best.pth``, else
``last.pth``) with its own validation set (``data.val``) and codec, so the crop is exactly what that
run's network was fed. A joint panel shows the joint's heatmap blended over the crop with its own
colour bar, the ground-truth keypoint (green circle; labelled joints inside the heatmap only) and the
keypoint decoded by the run's codec (red cross), and the distance between them in crop pixels.

Heatmaps are shown as the network outputs them (values can be negative for the MSE model), or
``relu(H)`` with ``--relu`` (what the matching loss and the window decoder see); the figure title
says which. ``--flip`` shows the flip-test average (with the run's 1 px shift) instead of the plain
output.

Coordinates: pixel-centre convention everywhere (pixel (row i, col j) is centred at (x=j, y=i)), in
the crop as in the heatmap. Heatmap -> crop pixels is the codec's own map,
``codec.geometry.to_input`` (standard: x_crop = x_hm * stride, stride = input size / heatmap size,
e.g. 4; UDP: x_crop = x_hm * (W - 1) / (w - 1)). The heatmap is drawn with the extent this map gives
to its pixel edges (heatmap pixel j covers crop x in [(j - 0.5) * stride, (j + 0.5) * stride] in the
standard case) and bilinearly upsampled by matplotlib, so a heatmap peak sits under the crop pixel it
encodes; the decoded and ground-truth markers are in crop pixels.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from posematch.build import build_run
from posematch.inference import predict_heatmaps
from posematch.predictor import run_test_time, saved_config

PARTS = ("wrist", "elbow", "knee", "ankle")  # default joints: one of each, the labelled side first
LOSS_NAMES = {"SinkhornMatchingLoss": "matching loss", "JointsMSELoss": "MSE"}


class ScriptError(RuntimeError):
    """A user error; main() prints it and exits 2."""


@dataclass
class Run:
    """One trained run rebuilt from its directory."""

    run_dir: Path
    cfg: DictConfig
    checkpoint: Path
    model: torch.nn.Module
    codec: Any
    dataset: Any
    spec: Any  # KeypointSpec
    label: str


def checkpoint_of(run_dir: Path, choice: str) -> Path:
    """The weights file: ``best.pth`` / ``last.pth``, or for ``auto`` best.pth, else last.pth."""
    names = {"auto": ("best.pth", "last.pth"), "best": ("best.pth",), "last": ("last.pth",)}
    for name in names[choice]:
        if (run_dir / name).is_file():
            return run_dir / name
    raise ScriptError(
        f"{run_dir}: no checkpoint ({' or '.join(names[choice])}) for --checkpoint {choice}"
    )


def loss_label(cfg: DictConfig) -> str:
    """Short name of the run's loss from its saved config (class name when unknown)."""
    target = str(cfg.get("loss", {}).get("_target_", "unknown loss"))
    name = target.rsplit(".", 1)[-1]
    return LOSS_NAMES.get(name, name)


def load_run(run_dir: str | Path, choice: str, data_root: str | None, device: str) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScriptError(f"--runs {run_dir}: not a directory")
    try:
        cfg = saved_config(run_dir)
    except FileNotFoundError as err:
        raise ScriptError(str(err)) from err
    if data_root is not None:
        cfg.data.root = data_root
    ann, images = Path(cfg.data.val.ann_file), Path(cfg.data.val.image_dir)
    for path, what in ((ann, "validation annotations"), (images, "validation images")):
        if not path.exists():
            raise ScriptError(
                f"{run_dir}: {what} {path} not found (data.root={cfg.data.root!r}; relative paths "
                f"are read from the current directory {Path.cwd()}: run from the repository root "
                "or pass --data-root)"
            )
    checkpoint = checkpoint_of(run_dir, choice)
    built = build_run(cfg, checkpoint)
    model, codec, spec = built.model.to(device), built.codec, built.spec
    dataset = instantiate(cfg.data.val)
    label = f"{loss_label(cfg)}\n{run_dir.name}"
    return Run(run_dir, cfg, checkpoint, model, codec, dataset, spec, label)


def parse_joints(requested: list[str], names: tuple[str, ...]) -> list[int]:
    """Joint indices from names or integer indices; ScriptError naming --joints otherwise."""
    out = []
    for item in requested:
        if item in names:
            out.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            out.append(int(item))
        else:
            raise ScriptError(f"--joints {item}: not a joint of this dataset ({', '.join(names)})")
    return out


def default_joints(names: tuple[str, ...], labelled: np.ndarray) -> list[int]:
    """One wrist, elbow, knee and ankle: the left one unless only the right one is labelled."""
    out = []
    for part in PARTS:
        found = [j for j, n in enumerate(names) if n.endswith(part)]
        found.sort(key=lambda j: (not labelled[j], not names[j].startswith(("left", "l_"))))
        out += found[:1]
    if not out:
        raise ScriptError(
            f"this dataset has no joint named *{'/*'.join(PARTS)}: choose them with --joints"
        )
    return out


def heatmap_extent(geometry: Any) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) of the heatmap's outer pixel edges in crop pixels, for
    ``imshow(extent=...)``: heatmap pixel edges at -0.5 and w - 0.5 mapped by ``to_input``."""
    w, h = geometry.heatmap_size
    corners = geometry.to_input(
        torch.tensor([[-0.5, -0.5], [w - 0.5, h - 0.5]], dtype=torch.float64)
    )
    (left, top), (right, bottom) = corners.tolist()
    return left, right, bottom, top


def run_sample(run: Run, index: int, flip: bool, device: str) -> dict[str, Any]:
    """The run's validation sample ``index``, its heatmaps and decoded keypoints in crop pixels."""
    if not 0 <= index < len(run.dataset):
        raise ScriptError(
            f"--index {index}: {run.run_dir} has {len(run.dataset)} validation instances"
        )
    sample = run.dataset[index]
    flip_perm = run.spec.flip_permutation() if flip else None
    _, shift = run_test_time(run.cfg)  # the run's own shift; --flip says whether to flip
    images = sample.image[None].to(device)
    heatmaps = predict_heatmaps(run.model, images, flip_perm, shift).cpu()
    decoded = run.codec.decode(heatmaps)
    pred = run.codec.geometry.to_input(decoded.keypoints.double())[0].numpy()
    image = sample.image.permute(1, 2, 0).numpy()
    if run.dataset.pipeline.color == "bgr":
        image = image[..., ::-1]
    return {
        "image": np.ascontiguousarray(image),
        "heatmaps": heatmaps[0].numpy(),
        "pred": pred,
        "gt": sample.keypoints.double().numpy(),
        "labelled": sample.target_weight.numpy() > 0,
        "image_id": sample.image_id,
    }


def plot(
    runs: list[Run], samples: list[dict[str, Any]], joints: list[int], names: tuple[str, ...],
    index: int, relu: bool, flip: bool,
) -> plt.Figure:  # fmt: skip
    rows, cols = len(runs), 1 + len(joints)
    h, w = samples[0]["image"].shape[:2]
    panel = 2.6
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * panel * max(w / h, 0.5) + 1.2 * len(joints), rows * panel + 1.0),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for r, (run, s) in enumerate(zip(runs, samples, strict=True)):
        ax = axes[r, 0]
        ax.imshow(s["image"])
        for j in joints:
            if s["labelled"][j]:
                ax.plot(*s["gt"][j], "o", mfc="none", mec="lime", ms=7, mew=1.5)
                ax.annotate(names[j], s["gt"][j], xytext=(4, 4), textcoords="offset points",
                            color="lime", fontsize=6)  # fmt: skip
            ax.plot(*s["pred"][j], "+", color="red", ms=8, mew=1.5)
        ax.set_ylabel(run.label, fontsize=9)
        ax.set_title(f"input crop {w}x{h}" if r == 0 else "", fontsize=9)
        extent = heatmap_extent(run.codec.geometry)
        ch, cw = s["image"].shape[:2]
        for c, j in enumerate(joints, start=1):
            ax = axes[r, c]
            hm = np.maximum(s["heatmaps"][j], 0) if relu else s["heatmaps"][j]
            ax.imshow(s["image"], alpha=1.0)
            im = ax.imshow(hm, cmap="jet", alpha=0.55, extent=extent, interpolation="bilinear")
            fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_xlim(-0.5, cw - 0.5)
            ax.set_ylim(ch - 0.5, -0.5)
            ax.plot(*s["pred"][j], "+", color="red", ms=10, mew=2)
            if s["labelled"][j]:
                ax.plot(*s["gt"][j], "o", mfc="none", mec="lime", ms=8, mew=1.5)
                err = float(np.linalg.norm(s["pred"][j] - s["gt"][j]))
                ax.set_title(f"{names[j]}: error {err:.1f} px", fontsize=8)
            else:
                ax.set_title(f"{names[j]}: unlabelled", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    values = "relu(heatmap)" if relu else "heatmap as output, no relu (negative values kept)"
    fig.suptitle(
        f"val instance {index} (image {samples[0]['image_id']}): {values}"
        f"{', flip-test average' if flip else ''}; colour bar per panel\n"
        "green o: ground truth, red +: decoded; crop pixels, heatmap px -> crop px by the codec",
        fontsize=9,
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                        help="posematch-train run directories (matching loss, MSE, ...)")  # fmt: skip
    parser.add_argument("--index", type=int, default=0, help="validation instance index")
    parser.add_argument("--joints", nargs="+", default=None,
                        help="joint names or indices (default: a wrist, elbow, knee and ankle)")  # fmt: skip
    parser.add_argument("--checkpoint", choices=["auto", "best", "last"], default="auto",
                        help="auto: best.pth, else last.pth")  # fmt: skip
    parser.add_argument("--data-root", default=None, help="replaces data.root of every run")
    parser.add_argument("--relu", action="store_true", help="show relu(heatmap)")
    parser.add_argument("--flip", action="store_true", help="flip-test averaged heatmaps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="results/fig3_heatmaps.png", help="PNG file to write")
    args = parser.parse_args(argv)
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ScriptError(f"--device {args.device}: CUDA is not available")
        runs = [load_run(d, args.checkpoint, args.data_root, args.device) for d in args.runs]
        samples = [run_sample(run, args.index, args.flip, args.device) for run in runs]
        names = tuple(runs[0].spec.names)
        for run in runs[1:]:
            if tuple(run.spec.names) != names:
                raise ScriptError(f"--runs: {run.run_dir} has other joints than {runs[0].run_dir}")
        if args.joints:
            joints = parse_joints(args.joints, names)
        else:
            joints = default_joints(names, samples[0]["labelled"])
        fig = plot(runs, samples, joints, names, args.index, args.relu, args.flip)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150)
        plt.close(fig)
    except ScriptError as err:
        print(f"plot_heatmaps: error: {err}", file=sys.stderr)
        return 2
    for run, s in zip(runs, samples, strict=True):
        errors = [
            math.hypot(*(s["pred"][j] - s["gt"][j])) for j in joints if s["labelled"][j]
        ]  # fmt: skip
        mean = f"{np.mean(errors):.2f} px" if errors else "n/a"
        print(
            f"{run.run_dir} ({run.checkpoint.name}, {loss_label(run.cfg)}): mean error {mean} over the labelled joints shown"
        )
    plural = "s" * (len(runs) != 1)
    listed = ", ".join(names[j] for j in joints)
    print(f"wrote {out}: {len(runs)} run{plural} x {len(joints)} joints ({listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
