"""Checks that run before any work, so a wrong setting stops the run instead of training or
scoring with it: the model's heatmaps must have the size the codec encodes and decodes.

The check is one dummy forward pass at the configured input size. It catches an input size the
backbone cannot take (HRNet's branches need multiples of 32) and a ``data.heatmap_size`` that is not
what the network produces; either would otherwise fail deep inside a module or, worse, train and
score with targets on another grid (rc 0, AP 0).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def check_geometry(
    model: nn.Module,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    num_keypoints: int | None = None,
) -> None:
    """Raise ValueError, naming ``data.input_size`` / ``data.heatmap_size`` / ``data.num_keypoints``,
    unless ``model`` maps a (1, 3, H, W) input to (1, K, h, w) heatmaps of ``heatmap_size``.

    Args:
        model: images -> heatmaps, on any device (left in the train/eval mode it had).
        input_size, heatmap_size: (width, height) in pixels, as the codec uses them.
        num_keypoints: K, or None to leave the joint count unchecked.
    """
    width, height = (int(v) for v in input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()  # BatchNorm must not learn from the zeros
    try:
        out = model(torch.zeros(1, 3, height, width, device=device))
    except RuntimeError as err:
        raise ValueError(
            f"data.input_size=[{width}, {height}] does not suit the model's backbone (a forward "
            f"pass fails: {str(err).splitlines()[0]}). HRNet and HRFormer need multiples of 32."
        ) from err
    finally:
        model.train(was_training)
    got_k, got_h, got_w = out.shape[1:]
    want_w, want_h = (int(v) for v in heatmap_size)
    if (got_w, got_h) != (want_w, want_h):
        raise ValueError(
            f"data.heatmap_size=[{want_w}, {want_h}] but the model makes {got_w}x{got_h} heatmaps "
            f"from data.input_size=[{width}, {height}]: set data.heatmap_size=[{got_w}, {got_h}]"
        )
    if num_keypoints is not None and got_k != num_keypoints:
        raise ValueError(
            f"data.num_keypoints={num_keypoints} but the model's head makes {got_k} heatmaps"
        )
