"""ONNX export of a pose model, optionally with its decoder, and the onnxruntime check of the file.

The exported graph takes ``images`` (B, 3, H, W) float32 crops in pixel units (0-255, the channel
order of the data pipeline: the model normalises them itself, as in PyTorch) with a dynamic batch,
and returns
- ``heatmaps`` (B, K, h, w), the raw model output; or, with a codec,
- ``keypoints`` (B, K, 2) in input-crop pixels (the codec's decoder, then heatmap -> input scale)
  and ``scores`` (B, K). Mapping to image pixels needs the crop's inverse matrix
  (``posematch.inference.to_image_pixels``), which stays outside the graph.

Exported with ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). The flip test is not
in the graph: run the graph on flipped crops to add it.
onnx, onnxruntime and onnxscript are the optional extra ``posematch[export]``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posematch.types import Codec

# The exporter's graph passes log a line per rewrite at INFO ("Replaced initializer ..."): kept
# at DEBUG, they show only when the root logger is at DEBUG (hydra.verbose=true).
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Raise these loggers to WARNING for the block, unless the root logger is at DEBUG."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class DecodingModel(nn.Module):
    """A pose model followed by its codec's decoder: images -> (keypoints input px, scores)."""

    def __init__(self, model: nn.Module, codec: Codec) -> None:
        super().__init__()
        self.model = model
        self.codec = codec

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.codec.decode(self.model(images))
        return self.codec.geometry.to_input(decoded.keypoints), decoded.scores


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    codec: Codec | None = None,
    opset: int = 18,
) -> Path:
    """Write ``model`` (with ``codec``'s decoder when given) to ``path`` as ONNX, dynamic batch.

    Args:
        model: images (B, 3, H, W) -> heatmaps; exported in eval mode on the CPU.
        path: the ``.onnx`` file (folders created).
        input_size: (width, height) of the crops in pixels.
        codec: None for heatmaps only; else a codec with ``decode`` and ``geometry``.
        opset: ONNX opset version.
    """
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; say so plainly)
    except ImportError as err:
        raise ImportError(
            "ONNX export needs the optional extra: pip install -e '.[export]' (make install does)"
        ) from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    module = (DecodingModel(model, codec) if codec is not None else model).eval()
    width, height = (int(v) for v in input_size)
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), _quiet(_EXPORTER_LOGGERS):
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["keypoints", "scores"] if codec is not None else ["heatmaps"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    assert program is not None  # dynamo=True returns the ONNXProgram
    program.save(str(path))
    return path


@dataclass(frozen=True)
class OnnxCheck:
    """How an exported file compares with PyTorch on the same crops.

    max_abs: largest absolute difference of each output (by name). keypoints_equal: decoded
    keypoints identical (to 1e-4 px) on every joint whose decision is clear. ambiguous: joints whose
    best and second-best 2x2 windows (window decoder; a map without positive values is clear: both
    take its first window) or pixels (arg-max) are within ``1e-4`` of the heatmap's scale of each
    other, where float rounding may choose either (not compared).
    """

    max_abs: dict[str, float]
    keypoints_equal: bool
    ambiguous: int


def _margins(heatmaps: torch.Tensor, window: bool) -> torch.Tensor:
    """(B, K) gap between the best and second-best candidate of the decoder, over the map's scale."""
    values = heatmaps.clamp_min(0) if window else heatmaps
    if window:
        values = nn.functional.avg_pool2d(values.flatten(0, 1).unsqueeze(1), 2, stride=1)
        values = values.view(*heatmaps.shape[:2], -1)
    top2 = values.flatten(2).topk(2, dim=-1).values
    scale = heatmaps.flatten(2).abs().amax(-1).clamp_min(1e-12)
    gap = (top2[..., 0] - top2[..., 1]) / scale
    # A dead map (no positive value) is decoded the same way by both: the first window, no choice.
    return torch.where(top2[..., 0] > 0, gap, torch.inf) if window else gap


def check_onnx(
    path: str | Path, model: nn.Module, images: torch.Tensor, codec: Codec | None = None
) -> OnnxCheck:
    """Run ``path`` in onnxruntime (CPU) and ``model`` (+ ``codec``) in PyTorch on ``images``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": images.float().numpy()}), strict=True))
    model = model.cpu().eval()
    with torch.no_grad():
        heatmaps = model(images.float())
        if codec is None:
            want = {"heatmaps": heatmaps.numpy()}
        else:
            keypoints, scores = DecodingModel(model, codec)(images.float())
            want = {"keypoints": keypoints.numpy(), "scores": scores.numpy()}
    if set(want) != set(got):
        raise ValueError(f"{path}: outputs {sorted(got)}, expected {sorted(want)}")
    max_abs = {k: float(np.abs(got[k] - want[k]).max()) for k in want}
    if codec is None:
        return OnnxCheck(max_abs, keypoints_equal=True, ambiguous=0)
    window = getattr(codec, "decoder", "window") == "window"
    clear = (_margins(heatmaps, window) > 1e-4).numpy()
    diff = np.abs(got["keypoints"] - want["keypoints"]).max(-1)
    return OnnxCheck(max_abs, bool((diff[clear] <= 1e-4).all()), int((~clear).sum()))
