"""DeepLabCut-style scores of a project's held-out frames: pixel error, PCK and OKS-AP.

The ground truth is the project's own labels, re-read through ``posematch.dlc_project`` with the
dataset's split arguments, so the frames and image ids are those ``posematch.data.dlc.DlcKeypoints``
gives. Predictions and labels are original-image pixels (nothing added or subtracted). Metrics:
- ``RMSE``: DeepLabCut's "test error": the mean over labelled (frame, part) of the Euclidean
  distance between prediction and label, in pixels. DeepLabCut calls it RMSE, but it computes
  ``np.nanmean`` of the per-point distances ``sqrt(dx^2 + dy^2)`` (``pairwisedistances`` and
  ``evaluate_network``), not a root of a mean square; this is the same number.
- ``RMSE_pcutoff``: the same mean over the parts whose predicted score is ``>= pcutoff``
  (config.yaml's ``pcutoff``, default 0.6), as DeepLabCut's ``RMSEpcutoff``; NaN when no part
  passes (``null`` in ``metrics.jsonl`` and ``metrics.json``, which are strict JSON). Our score
  is the codec's decoded heatmap maximum, not DeepLabCut's sigmoid "likelihood": the scales
  differ, so one ``pcutoff`` keeps a different share of parts in each.
- ``PCK`` (and ``PCK@<thr>``, ``PCK@0.05``): percent of labelled parts whose distance is
  ``< thr x`` the longest side of the tight box around that frame's labelled points (mmpose's
  PCK with ``norm_item='bbox'``: strict ``<``, the box's longest side; mmpose 0.x's top-down
  default threshold is 0.2, 1.x's ``PCKAccuracy`` 0.05). Pooled over all labelled parts (mmpose
  averages the per-part accuracies); a frame whose box has no extent (one labelled point) is left
  out, as mmpose leaves out a zero normaliser.
- ``AP``, ``AP50``, ``AP75``, ``AR``: OKS-AP from pycocotools ``COCOeval`` on an in-memory COCO
  made of the split (one annotation per frame; visibility 2 labelled, 0 not), with the spec's
  ``sigmas``; only when the spec has sigmas. The OKS scale (``area``) is the area of the tight box
  around the frame's labelled points, each side at least ``min_box_size`` px (so a one-point frame
  has a scale). A frame's detection score is the mean of its keypoint scores.
A frame whose image was unreadable (``valid`` False) has no prediction: it is left out of ``RMSE``,
its parts count as wrong in ``PCK`` and it is missed in ``AP``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from posematch.dlc_project import DEFAULT_PCUTOFF, labelled_box, project_split, read_project
from posematch.evaluation.arrays import as_array
from posematch.evaluation.coco import coco_keypoint_stats
from posematch.keypoints import KeypointSpec
from posematch.types import Predictions

log = logging.getLogger(__name__)

AP_KEYS = ("AP", "AP50", "AP75", "AR")


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances in pixels of (N, K, 2) predictions to labels; NaN where the
    label (or the prediction) is NaN."""
    return np.sqrt(((np.asarray(pred) - np.asarray(gt)) ** 2).sum(axis=-1))


def mean_error(errors: np.ndarray, keep: np.ndarray | None = None) -> float:
    """DeepLabCut's "RMSE": the mean of the finite ``errors`` (where ``keep``); NaN if none."""
    mask = np.isfinite(errors) if keep is None else np.isfinite(errors) & keep
    values = errors[mask]
    return float(values.mean()) if values.size else float("nan")


def pck(errors: np.ndarray, gt: np.ndarray, thr: float) -> float:
    """Percent of labelled parts within ``thr`` x their frame's box size (module docstring).

    errors: (N, K) px, NaN for a frame without a prediction (counted wrong). gt: (N, K, 2) px, NaN
    where unlabelled. NaN when no frame has a box with extent.
    """
    labelled = ~np.isnan(gt).any(axis=-1)
    sizes = np.array([labelled_box(g)[2:].max() for g in gt])
    counted = labelled & (sizes > 0)[:, None]
    if not counted.any():
        return float("nan")
    with np.errstate(invalid="ignore"):
        correct = counted & (errors < thr * sizes[:, None])
    return float(100.0 * correct.sum() / counted.sum())


def coco_ground_truth(image_ids: np.ndarray, gt: np.ndarray, min_box_size: float) -> COCO:
    """pycocotools COCO of one annotation per frame: keypoints (v = 2 labelled, 0 not, with
    x = y = 0), bbox the tight labelled box, area its area with each side >= ``min_box_size``."""
    names = [f"part{j}" for j in range(gt.shape[1])]
    anns = []
    for n, (image_id, kpts) in enumerate(zip(image_ids.tolist(), gt, strict=True)):
        labelled = ~np.isnan(kpts).any(axis=1)
        x, y, w, h = labelled_box(kpts).tolist()
        flat = np.concatenate([np.where(labelled[:, None], kpts, 0.0), 2.0 * labelled[:, None]], 1)
        anns.append(
            {
                "id": n + 1,
                "image_id": int(image_id),
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [x, y, w, h],
                "area": max(w, min_box_size) * max(h, min_box_size),
                "keypoints": flat.reshape(-1).tolist(),
                "num_keypoints": int(labelled.sum()),
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": int(i)} for i in image_ids.tolist()],
        "annotations": anns,
        "categories": [{"id": 1, "name": "animal", "keypoints": names, "skeleton": []}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def oks_ap(
    image_ids: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    valid: np.ndarray,
    sigmas: tuple[float, ...],
    min_box_size: float,
) -> dict[str, float]:
    """AP, AP50, AP75 and AR (fractions) of one prediction per valid frame (module docstring)."""
    if not valid.any():
        return dict.fromkeys(AP_KEYS, 0.0)
    coco = coco_ground_truth(image_ids, gt, min_box_size)
    flat = np.concatenate([pred, scores[..., None]], axis=2).reshape(pred.shape[0], -1)
    results = [
        {
            "image_id": int(image_ids[i]),
            "category_id": 1,
            "keypoints": flat[i].tolist(),
            "score": float(scores[i].mean()),
        }
        for i in np.flatnonzero(valid)
    ]
    stats = coco_keypoint_stats(coco, results, sigmas)
    return {key: stats[key] for key in AP_KEYS}


def write_predictions_csv(
    path: str,
    frames: list[str],
    bodyparts: tuple[str, ...],
    pred: np.ndarray,
    scores: np.ndarray,
    valid: np.ndarray,
    scorer: str = "posematch",
) -> None:
    """Predictions in DeepLabCut's layout: header rows scorer / bodyparts / coords (x, y,
    likelihood per part), one row per frame path (relative to the project); a frame without a
    prediction has empty cells. ``likelihood`` holds our keypoint score (see the module docstring)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scorer"] + [scorer] * (3 * len(bodyparts)))
        writer.writerow(["bodyparts"] + [p for p in bodyparts for _ in range(3)])
        writer.writerow(["coords"] + ["x", "y", "likelihood"] * len(bodyparts))
        for n, frame in enumerate(frames):
            if not valid[n]:
                writer.writerow([frame] + [""] * (3 * len(bodyparts)))
                continue
            cells = np.concatenate([pred[n], scores[n][:, None]], axis=1).reshape(-1)
            writer.writerow([frame] + [repr(float(v)) for v in cells])


class DlcEvaluator:
    """Accumulates predictions of a DeepLabCut project's split and scores them (module docstring).

    Args:
        project: the project folder, as the dataset's.
        split: the split scored (``"test"``: the held-out frames).
        train_fraction, num_folds, fold, split_seed: the dataset's split arguments (the same
            values pick the same frames; see ``posematch.dlc_project.split_indices``).
        spec: the keypoint description; its names must be the project's body parts; its
            ``sigmas`` (when any) give the OKS-AP. None: no AP.
        output_dir: where ``results_name`` (the predictions in DeepLabCut's CSV layout) is
            written; None writes nothing.
        pcutoff: score threshold of ``RMSE_pcutoff``; None = config.yaml's ``pcutoff``, else 0.6.
        pck_thr: the ``PCK`` threshold, a fraction of the box's longest side (0.2).
        min_box_size: the least side in pixels of the box whose area is the OKS scale (the
            dataset's ``min_box_size``).
        skip_bad: skip malformed label rows as the dataset does (the frames must agree).
        results_name: file name of the predictions.
        scorer: the scorer name written in the predictions' header.
    """

    def __init__(
        self,
        project: str,
        split: str = "test",
        train_fraction: float = 0.95,
        num_folds: int = 0,
        fold: int = 0,
        split_seed: int = 0,
        spec: KeypointSpec | None = None,
        output_dir: str | None = None,
        pcutoff: float | None = None,
        pck_thr: float = 0.2,
        min_box_size: float = 32.0,
        skip_bad: bool = False,
        results_name: str = "dlc_predictions.csv",
        scorer: str = "posematch",
    ) -> None:
        self.project = read_project(project, skip_bad)
        if not pck_thr > 0:
            raise ValueError(f"pck_thr={pck_thr}: expected a positive fraction of the box size")
        names = spec.names if spec is not None else None
        self.frame_ids = project_split(self.project, project, names, split, train_fraction,
                                       num_folds, fold, split_seed)  # fmt: skip
        self.gt = np.stack([self.project.frames[i].keypoints for i in self.frame_ids.tolist()])
        if pcutoff is None:
            pcutoff = self.project.pcutoff if self.project.pcutoff is not None else DEFAULT_PCUTOFF
        self.pcutoff = float(pcutoff)
        self.pck_thr = float(pck_thr)
        self.sigmas = tuple(spec.sigmas) if spec is not None else ()
        self.min_box_size = float(min_box_size)
        self.output_dir = output_dir
        self.results_file = None if output_dir is None else os.path.join(output_dir, results_name)
        self.scorer = scorer
        self.reset()

    @property
    def primary_metric(self) -> str:
        """OKS-AP when the spec has sigmas, else PCK at ``pck_thr``."""
        return "AP" if self.sigmas else "PCK"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The higher-is-better metrics ``evaluate`` reports (``trainer.monitor`` choices; RMSE,
        lower-is-better, is not one)."""
        pcks = dict.fromkeys(("PCK", f"PCK@{self.pck_thr:g}", "PCK@0.05"))
        return (*pcks, *(AP_KEYS if self.sigmas else ()))

    def reset(self) -> None:
        """Forget every processed prediction."""
        self._parts: list[tuple[np.ndarray, ...]] = []

    def restrict(self, instances: Sequence[int], image_ids: Sequence[int]) -> None:
        """Score these frames only (``trainer.max_val_instances``; a frame's image id is its
        index in the project); ``instances`` unused."""
        keep = np.isin(self.frame_ids, np.asarray(list(image_ids), dtype=self.frame_ids.dtype))
        self.frame_ids = self.frame_ids[keep]
        self.gt = self.gt[keep]

    def add(self, image_ids: Any, keypoints: Any, keypoint_scores: Any, valid: Any = None) -> None:
        """Add a batch of N frames' predictions (numpy arrays, torch tensors or lists).

        Args:
            image_ids: (N,) int, the frames' image ids (their positions in the project's sorted
                frame list, as the dataset gives them).
            keypoints: (N, K, 2) float, (x, y) original-image pixels.
            keypoint_scores: (N, K) float, the decoded scores.
            valid: (N,) bool or None (all valid); an invalid row has no prediction.
        """
        ids = as_array(image_ids, "image_ids", np.int64).reshape(-1)
        kpts = as_array(keypoints, "keypoints", np.float64)
        kps = as_array(keypoint_scores, "keypoint_scores", np.float64)
        n, k = ids.shape[0], len(self.project.bodyparts)
        for name, arr, want in (("keypoints", kpts, (n, k, 2)), ("keypoint_scores", kps, (n, k))):
            if arr.shape != want:
                raise ValueError(f"add(): {name} has shape {arr.shape}, expected {want} (K={k})")
        ok = np.ones(n, bool) if valid is None else as_array(valid, "valid", bool).reshape(-1)
        if ok.shape != (n,):
            raise ValueError(f"add(): valid has shape {ok.shape}, expected ({n},)")
        if not (np.isfinite(kpts[ok]).all() and np.isfinite(kps[ok]).all()):
            raise ValueError("add(): keypoints or keypoint_scores hold non-finite values")
        self._parts.append((ids, kpts, kps, ok))

    def process(self, predictions: Predictions) -> None:
        """Add a batch of ``Predictions`` (``posematch.inference.predict_loader``)."""
        self.add(
            predictions.image_id,
            predictions.keypoints,
            predictions.keypoint_scores,
            predictions.valid,
        )

    def _ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predictions (N, K, 2), scores (N, K), valid (N,) in split order; every frame once."""
        if not self._parts:
            raise RuntimeError("DlcEvaluator.evaluate(): no predictions were processed")
        ids, kpts, kps, ok = (np.concatenate(p) for p in zip(*self._parts, strict=True))
        rows = np.searchsorted(self.frame_ids, ids)
        known = np.zeros(ids.shape, bool)
        inside = rows < self.frame_ids.size
        known[inside] = self.frame_ids[rows[inside]] == ids[inside]
        counts = np.bincount(rows[known], minlength=self.frame_ids.size)
        bad = {
            "not in the split": int((~known).sum()),
            "given twice or more": int((counts > 1).sum()),
            "missing": int((counts == 0).sum()),
        }
        if any(bad.values()):
            detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
            raise ValueError(
                f"image ids do not cover the {self.frame_ids.size} frames of the split of "
                f"{self.project.root}: {detail}"
            )
        order = np.argsort(rows, kind="stable")
        return kpts[order], kps[order], ok[order]

    def evaluate(self) -> dict[str, float | bool]:
        """Write the predictions (when ``output_dir``) and score them.

        Returns:
            ``RMSE``, ``RMSE_pcutoff`` (pixels), ``PCK``, ``PCK@<thr>``, ``PCK@0.05`` (percent),
            ``AP``, ``AP50``, ``AP75``, ``AR`` (fractions; when the spec has sigmas) and
            ``"scored": True``.
        """
        pred, scores, valid = self._ordered()
        if self.results_file is not None:
            frames = [self.project.frames[i].path for i in self.frame_ids.tolist()]
            write_predictions_csv(
                self.results_file, frames, self.project.bodyparts, pred, scores, valid, self.scorer
            )
            log.info("DeepLabCut-layout predictions in %s", self.results_file)
        if not valid.all():
            log.warning("%d frames have no prediction (unreadable images)", int((~valid).sum()))
        pred = np.where(valid[:, None, None], pred, np.nan)
        errors = point_errors(pred, self.gt)
        metrics: dict[str, float | bool] = {
            "RMSE": mean_error(errors),
            "RMSE_pcutoff": mean_error(errors, scores >= self.pcutoff),
        }
        metrics["PCK"] = pck(errors, self.gt, self.pck_thr)
        for thr in (self.pck_thr, 0.05):
            metrics[f"PCK@{thr:g}"] = pck(errors, self.gt, thr)
        if self.sigmas:
            ids = self.frame_ids
            metrics.update(
                oks_ap(ids, self.gt, pred, scores, valid, self.sigmas, self.min_box_size)
            )
        return {**metrics, "scored": True}
