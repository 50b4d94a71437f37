"""``posematch-export``: a trained model to ONNX with a dynamic batch, checked by onnxruntime.

    posematch-export checkpoint=outputs/train/x/best.pth [decoder=true] [check_input=photo.jpg]

The model (and codec) come from the run folder's saved config, as ``posematch-infer`` takes them, or
from the composed config for a checkpoint outside a run. The file is then run by onnxruntime and by
PyTorch on the same crops (``check_input``'s whole-image crop, else seeded noise crops); the command
fails unless heatmaps (or scores) agree within ``tolerance`` and every clearly decided keypoint is
identical. See ``posematch.export`` for the graph's inputs and outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from posematch.build import build_run
from posematch.cli.common import CONFIG_PATH, flag
from posematch.cli.frames import read_image
from posematch.cli.help import with_help
from posematch.cli.infer import model_config
from posematch.cli.person_boxes import whole_image
from posematch.cli.user_errors import user_errors
from posematch.data.boxes import box_to_center_scale
from posematch.export import check_onnx, export_onnx

log = logging.getLogger("posematch.export")


def check_crops(cfg: DictConfig, source: DictConfig) -> torch.Tensor:
    """(2, 3, H, W) float crops in pixel units: ``check_input``'s whole-image crop (and its mirror),
    else seeded uniform noise."""
    width, height = source.data.input_size
    if cfg.check_input is None:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(2, 3, height, width, generator=generator) * 255
    image = read_image(Path(cfg.check_input))
    pipeline = instantiate(source.data.val.pipeline, train=False)
    boxes, _ = whole_image(image)
    center, scale = box_to_center_scale(boxes[0], pipeline.aspect_ratio)
    k = pipeline.spec.num_keypoints
    crop = pipeline(image, np.zeros((k, 2)), np.ones(k), center, scale).image.float()
    return torch.stack([crop, crop.flip(-1)])


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export and check as configured; returns the file and the check's numbers."""
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: file not found")
    source = model_config(cfg)
    run = build_run(source, cfg.checkpoint, flip=False)
    model, codec, geometry = run.model, run.codec, run.codec.geometry
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).with_suffix(".onnx")
    used = codec if cfg.decoder else None
    export_onnx(model, out, geometry.input_size, used, opset=int(cfg.opset))
    check = check_onnx(out, model, check_crops(cfg, source), used)
    worst = max(v for k, v in check.max_abs.items() if k != "keypoints")
    summary = {
        "onnx": str(out),
        "decoder": flag(cfg, "decoder"),
        "max_abs": check.max_abs,
        "keypoints_equal": check.keypoints_equal,
        "ambiguous_joints": check.ambiguous,
    }
    print(f"posematch-export: {out} checked by onnxruntime: {json.dumps(summary)}")
    if worst > cfg.tolerance or not check.keypoints_equal:
        raise ValueError(
            f"{out}: onnxruntime disagrees with PyTorch (max |diff| {worst:.3g}, tolerance "
            f"{cfg.tolerance}; keypoints equal: {check.keypoints_equal})"
        )
    return summary


@with_help("export")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors("posematch-export"):
        run(cfg)


if __name__ == "__main__":
    main()
