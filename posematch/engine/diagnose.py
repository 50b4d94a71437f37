"""Diagnosis of a trained model on a COCO-format split: ranking, localisation, bias, heatmap health.

One pass over the dataset (one process, dataset order) runs every crop twice, plain and flipped
(``posematch.inference.forward_heatmaps``), and keeps per instance the keypoints decoded without
and with the flip test, the keypoint scores, each crop's image -> heatmap linear map and the mass
shares of the non-flipped heatmaps; never the heatmaps themselves. Then:

- the AP row: the run's evaluator (rescoring, OKS-NMS, COCOeval) on the predictions of the run's own
  test setting (flip test or not, as it validated);
- the oracle AP: the same results file with every score replaced by the result's true OKS;
- recall at OKS, joint errors and mean errors from the best match of each ground-truth instance
  among all predictions (before rescoring and NMS), as defined in
  ``posematch.evaluation.diagnosis``; the mean error with and without the flip test uses the same
  matches (chosen with the run's own setting);
- heatmap health of the non-flipped heatmaps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from posematch.engine.loaders import batches
from posematch.engine.settings import Validation
from posematch.evaluation.coco import CocoKeypointEvaluator, coco_keypoint_stats
from posematch.evaluation.diagnosis import (
    best_matches,
    ground_truth,
    heatmap_health,
    joint_errors,
    mean_error,
    oracle_results,
    recall_at_oks,
)
from posematch.inference import decode_to_image, forward_heatmaps, heatmap_mass_shares
from posematch.keypoints import KeypointSpec
from posematch.types import Batch, Codec, EvaluationSet


def image_to_heatmap(inverse: torch.Tensor, heatmap_per_input: tuple[float, float]) -> torch.Tensor:
    """(B, 2, 2) linear maps image px -> heatmap px from (B, 2, 3) input -> image crop matrices and
    the codec's (x, y) heatmap / input scale (``HeatmapGeometry.scale``)."""
    linear = inverse[:, :, :2].double()
    scale = torch.diag(torch.tensor(heatmap_per_input, dtype=torch.float64))
    return scale @ torch.linalg.inv(linear)


@torch.no_grad()
def collect(
    model: nn.Module,
    dataset: EvaluationSet,
    codec: Codec,
    flip_perm: list[int],
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    shift: bool = True,
) -> dict[str, np.ndarray]:
    """Per-instance arrays in dataset order: image_id, score (box), area, keypoints_plain /
    keypoints_flip (N, K, 2) image px, scores_plain / scores_flip (N, K), to_heatmap (N, 2, 2),
    top_mass / window_mass (N, K) (non-flipped heatmaps, NaN when dead)."""
    loader = DataLoader(
        cast(Dataset, dataset),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=Batch.collate,
    )
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}

    def add(key: str, value: Any) -> None:
        array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        parts.setdefault(key, []).append(array)

    with batches(loader) as items:
        for batch in items:
            images = batch.image.to(device, non_blocking=True)
            plain, flipped = forward_heatmaps(model, images, flip_perm, shift)
            for name, heatmaps in (("plain", plain), ("flip", flipped)):
                keypoints, scores = decode_to_image(heatmaps, batch.inverse, codec)
                add(f"keypoints_{name}", keypoints)
                add(f"scores_{name}", scores)
            top, window = heatmap_mass_shares(plain)
            add("top_mass", top)
            add("window_mass", window)
            add("to_heatmap", image_to_heatmap(batch.inverse, codec.geometry.scale))
            add("image_id", batch.image_id)
            add("score", batch.box_score)
            add("area", batch.area)
    if not parts:
        raise ValueError("diagnosis: the dataset has no instances")
    return {k: np.concatenate(v) for k, v in parts.items()}


def diagnose(
    model: nn.Module,
    validation: Validation,
    spec: KeypointSpec,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, Any]:
    """The diagnosis of ``model`` on ``validation.dataset`` (see the module docstring).

    Args:
        model: images -> heatmaps, on ``device``.
        validation: a COCO-format top-down dataset in test mode (``meta`` with inverse crop
            matrices), the codec that decodes the heatmaps (``codec.geometry`` maps heatmap and
            input pixels), the run's COCO evaluator (its ground truth, rescoring, NMS and COCOeval;
            its results file is written to ``evaluator.results_file``) and the run's own test
            time (flip test when ``flip_perm`` is set, and its shift): the AP rows, joint errors
            and recall use it.
        spec: the dataset's keypoints: joint names, flip pairs (both passes are always made),
            OKS sigmas.

    Returns:
        ``{"setup", "ap", "ap_oracle", "recall_at_oks", "joint_error", "mean_error",
        "heatmap_health"}``: see ``posematch.evaluation.diagnosis`` for the definitions.
    """
    dataset, codec, evaluator = validation.dataset, validation.codec, validation.evaluator
    flip, shift = validation.flip_perm is not None, validation.shift
    if not isinstance(evaluator, CocoKeypointEvaluator):
        raise TypeError(
            f"diagnosis needs a COCO-format dataset and CocoKeypointEvaluator, got "
            f"{type(evaluator).__name__}"
        )
    if not spec.sigmas:
        raise ValueError(f"spec {spec.name!r}: no OKS sigmas, so no OKS-based diagnosis")
    sigmas = tuple(float(s) for s in spec.sigmas)
    arrays = collect(
        model, dataset, codec, spec.flip_permutation(), device, batch_size, num_workers, shift
    )
    own = "flip" if flip else "plain"
    keypoints, scores = arrays[f"keypoints_{own}"], arrays[f"scores_{own}"]

    evaluator.reset()
    evaluator.add(arrays["image_id"], keypoints, scores, arrays["score"], arrays["area"])
    metrics = evaluator.evaluate()
    if not metrics.get("scored", False):
        raise ValueError(f"{evaluator.ann_file}: no annotations, so nothing to diagnose")
    results = json.loads(Path(evaluator.results_file).read_text())
    gt = ground_truth(evaluator.gt, spec.num_keypoints, evaluator.category_id)
    oracle = coco_keypoint_stats(evaluator.gt, oracle_results(results, gt, sigmas), sigmas)

    index, best_oks = best_matches(gt, arrays["image_id"], keypoints, sigmas)
    matched = index >= 0
    m = index[matched]
    gt_xy, vis, areas = gt.keypoints[matched], gt.visible[matched], gt.areas[matched]
    errors = {
        label: mean_error(arrays[f"keypoints_{name}"][m], gt_xy, vis, arrays["to_heatmap"][m])
        for label, name in (("flip", "flip"), ("no_flip", "plain"))
    }
    return {
        "setup": {
            "instances": len(arrays["image_id"]),
            "gt_instances": len(gt),
            "matched": int(matched.sum()),
            "flip_test": bool(flip),
            "shift": bool(shift),
            "results_file": str(evaluator.results_file),
        },
        "ap": {k: v for k, v in metrics.items() if k != "scored"},
        "ap_oracle": oracle,
        "recall_at_oks": recall_at_oks(best_oks),
        "joint_error": joint_errors(keypoints[m], gt_xy, vis, areas, spec.names),
        "mean_error": errors,
        "heatmap_health": heatmap_health(arrays["top_mass"], arrays["window_mass"]),
    }
