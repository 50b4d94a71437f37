"""MPII PCKh, as the official MATLAB evaluation and its HRNet / SimpleBaseline port compute it.

Protocol (Andriluka et al. 2014; HRNet ``lib/dataset/mpii.py`` ``evaluate``):
- ground truth from ``annot/gt_valid.mat`` (scipy.io.loadmat): ``dataset_joints`` (1x16 cell of
  names), ``jnt_missing`` (16, N), ``pos_gt_src`` (16, 2, N) and ``headboxes_src`` (2, 2, N), all in
  MATLAB 1-based pixels; column n is the n-th record of ``valid.json``;
- predictions are 0-based image pixels (the convention of ``posematch.data.mpii``, which subtracts 1
  from the annotations); 1 is added back before comparing and before writing ``pred.mat``;
- head size = 0.6 x |headbox corner 1 - corner 0|; a visible joint is correct when its error
  divided by the head size is ``<= 0.5`` (inclusive, ``less_equal`` as the official code);
- per joint: 100 x correct / visible. Columns: Head = head_top; Shoulder, Elbow, Wrist, Hip, Knee,
  Ankle = the unweighted mean of the left and right joint's PCKh; Mean = the visible-count-weighted
  mean over all joints but pelvis and thorax (official ``jnt_ratio`` with indices 6:8 masked), i.e.
  100 x correct / visible summed over those 14 joints;
- ``Mean@0.1``: the same Mean at threshold 0.1. The official code labels ``pckAll[11]`` of
  ``np.arange(0, 0.51, 0.01)`` "Mean@0.1", which is the threshold 0.11; pass ``low_threshold=0.11``
  to reproduce that column. The returned key always names the threshold used.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.io import loadmat, savemat

from posematch.evaluation.arrays import as_array
from posematch.keypoints import MPII as MPII_SPEC
from posematch.types import Predictions

log = logging.getLogger(__name__)

# Joint abbreviations of gt_valid.mat in the order of the official annot/*.json (and MPII_SPEC).
MAT_JOINT_NAMES = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip
# The joints the official code looks up by name (it never looks up pelvis, thorax or neck).
LOOKED_UP = (
    "head", "lsho", "lelb", "lwri", "lhip", "lkne", "lank",
    "rsho", "relb", "rwri", "rkne", "rank", "rhip",
)  # fmt: skip
EXCLUDED_FROM_MEAN = (6, 7)  # pelvis, thorax: the official masks PCKh[6:8] and jnt_count[6:8]
COLUMNS = {
    "Head": ("head",),
    "Shoulder": ("lsho", "rsho"),
    "Elbow": ("lelb", "relb"),
    "Wrist": ("lwri", "rwri"),
    "Hip": ("lhip", "rhip"),
    "Knee": ("lkne", "rkne"),
    "Ankle": ("lank", "rank"),
}


@dataclass(frozen=True)
class MpiiGroundTruth:
    """The arrays of ``gt_valid.mat``, MATLAB 1-based pixels, N person instances."""

    joint_names: tuple[str, ...]
    jnt_missing: np.ndarray  # (16, N) 1 = not annotated
    pos_gt_src: np.ndarray  # (16, 2, N) (x, y)
    headboxes_src: np.ndarray  # (2, 2, N) [corner, (x, y), n]

    @property
    def num_instances(self) -> int:
        return int(self.pos_gt_src.shape[2])


def _cell_strings(cell: np.ndarray) -> tuple[str, ...]:
    """Names from a MATLAB cell array of strings (or a char matrix) as loadmat returns it."""
    names = []
    for entry in np.asarray(cell, dtype=object).reshape(-1):
        flat = np.asarray(entry).reshape(-1)
        names.append(str(flat[0]).strip() if flat.size else "")
    return tuple(names)


def load_gt_valid(path: str) -> MpiiGroundTruth:
    """Read and check ``gt_valid.mat`` (official layout, see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"gt_file={path}: MPII ground-truth .mat not found")
    mat = loadmat(path)
    for field in ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src"):
        if field not in mat:
            raise ValueError(f"{path}: field '{field}' is missing")
    names = _cell_strings(mat["dataset_joints"])
    for name in LOOKED_UP:
        if name not in names:
            raise ValueError(f"{path}: 'dataset_joints' has no joint {name!r} (has {names})")
        if names.index(name) != MAT_JOINT_NAMES.index(name):
            raise ValueError(
                f"{path}: 'dataset_joints' puts {name!r} at {names.index(name)}, but predictions "
                f"are in the annot/*.json order {MAT_JOINT_NAMES}"
            )
    missing = np.asarray(mat["jnt_missing"], dtype=np.float64)
    pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    boxes = np.asarray(mat["headboxes_src"], dtype=np.float64)
    k = len(MAT_JOINT_NAMES)
    n = pos.shape[2] if pos.ndim == 3 else -1
    for field, arr, want in (
        ("pos_gt_src", pos, (k, 2, n)),
        ("jnt_missing", missing, (k, n)),
        ("headboxes_src", boxes, (2, 2, n)),
    ):
        if arr.shape != want or n < 1:
            raise ValueError(f"{path}: '{field}' has shape {arr.shape}, expected {want}")
    return MpiiGroundTruth(names, missing, pos, boxes)


def head_sizes(headboxes_src: np.ndarray, factor: float = 0.6) -> np.ndarray:
    """(N,) head sizes, pixels: ``factor`` (official SC_BIAS 0.6) x the head-box diagonal."""
    return factor * np.linalg.norm(headboxes_src[1] - headboxes_src[0], axis=0)


def normalized_errors(pred_src: np.ndarray, gt: MpiiGroundTruth, factor: float = 0.6) -> np.ndarray:
    """(16, N) prediction errors in head sizes; ``pred_src`` (16, 2, N) in 1-based pixels."""
    err = np.linalg.norm(pred_src - gt.pos_gt_src, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero head box: never correct
        return err / head_sizes(gt.headboxes_src, factor)[None, :]


def pckh_columns(correct: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    """Table columns from per-joint counts (16,) of correct and of visible joints.

    Head, Shoulder, ..., Ankle as the official name look-ups (left/right PCKh averaged unweighted),
    Mean = 100 x sum(correct) / sum(visible) over all joints but pelvis and thorax (equal to the
    official ``sum(PCKh * jnt_ratio)``). A joint with no visible instance has PCKh NaN.
    """
    correct = np.asarray(correct, dtype=np.float64)
    visible = np.asarray(visible, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = 100.0 * correct / visible
    index = {name: i for i, name in enumerate(MAT_JOINT_NAMES)}
    table = {col: float(np.mean([per_joint[index[j]] for j in js])) for col, js in COLUMNS.items()}
    used = np.ones(len(MAT_JOINT_NAMES), dtype=bool)
    used[list(EXCLUDED_FROM_MEAN)] = False
    total = visible[used].sum()
    table["Mean"] = float(100.0 * correct[used].sum() / total) if total > 0 else float("nan")
    return table


def pckh(
    pred_src: np.ndarray,
    gt: MpiiGroundTruth,
    threshold: float = 0.5,
    low_threshold: float = 0.1,
    head_size_factor: float = 0.6,
) -> dict[str, float]:
    """PCKh table of predictions ``pred_src`` (16, 2, N), MATLAB 1-based pixels.

    Returns per-joint ``"PCKh/<joint>"`` (MPII_SPEC names), the columns of ``pckh_columns`` at
    ``threshold`` and ``"Mean@<low_threshold>"``, all in percent.
    """
    visible = 1.0 - gt.jnt_missing
    scaled = normalized_errors(pred_src, gt, head_size_factor)
    counts = visible.sum(1)
    correct = ((scaled <= threshold) * visible).sum(1)
    correct_low = ((scaled <= low_threshold) * visible).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = 100.0 * correct / counts
    out = {f"PCKh/{name}": float(v) for name, v in zip(MPII_SPEC.names, per_joint, strict=True)}
    out.update(pckh_columns(correct, counts))
    out[f"Mean@{low_threshold:g}"] = pckh_columns(correct_low, counts)["Mean"]
    return out


def check_record_order(ann_file: str, gt: MpiiGroundTruth, tol: float = 1.0) -> None:
    """ValueError when the records of ``ann_file`` (the split's json) are not the instances of
    ``gt_valid.mat`` in its order: predictions are scored by position, so a reordered json with
    the same count scored perfect predictions Mean PCKh 0.0. Record i's labelled joints (1-based,
    as the json stores them) must lie within ``tol`` px of ``pos_gt_src[:, :, i]``; a few records
    that differ (at most 1%) are reported as a warning, more are an error naming the first."""
    try:
        with open(ann_file) as f:
            records = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"ann_file={ann_file}: unreadable ({err})") from err
    if not isinstance(records, list) or len(records) != gt.num_instances:
        count = len(records) if isinstance(records, list) else "no list of"
        raise ValueError(
            f"ann_file={ann_file}: {count} records, but gt_valid.mat holds {gt.num_instances} "
            "instances: the json and the ground truth must describe the same split"
        )
    differ = []
    for i, rec in enumerate(records):
        try:
            joints = np.asarray(rec["joints"], dtype=np.float64).reshape(-1, 2)
            labelled = np.asarray(rec["joints_vis"]).reshape(-1) > 0
        except (KeyError, TypeError, ValueError):
            continue  # the data loader names malformed records
        if joints.shape[0] != gt.pos_gt_src.shape[0]:
            continue
        both = labelled & (gt.jnt_missing[:, i] == 0)
        if both.any():
            gap = np.abs(joints[both] - gt.pos_gt_src[both, :, i]).max()
            if not gap <= tol:
                differ.append((i, float(gap)))
    if not differ:
        return
    first, gap = differ[0]
    text = (
        f"ann_file={ann_file}: {len(differ)} of {len(records)} records do not match gt_valid.mat "
        f"in its order (first: record {first}, joints {gap:.1f} px from pos_gt_src[:, :, {first}])"
    )
    if len(differ) > 0.01 * len(records):
        raise ValueError(f"{text}: the json must list the ground truth's instances in its order")
    log.warning("%s", text)


class MpiiPCKhEvaluator:
    """Accumulates MPII predictions and scores them with the official PCKh protocol.

    Args:
        gt_file: ``annot/gt_valid.mat``; ``None`` for the test split (pred.mat only, no score).
        ann_file: the split's json (``annot/valid.json``), whose record i is scored against
            instance i of ``gt_file``: checked to list the same instances in the same order
            (``check_record_order``); None skips the check.
        output_dir: where ``pred.mat`` (``preds``: (N, 16, 2), 1-based pixels, official layout)
            is written; ``None`` writes nothing.
        threshold: PCKh threshold in head sizes (official 0.5, inclusive).
        low_threshold: threshold of the second Mean column (0.1; the official column is 0.11).
        head_size_factor: head size / head-box diagonal (official SC_BIAS 0.6).
        pred_name: file name of the predictions.
    """

    def __init__(
        self,
        gt_file: str | None,
        output_dir: str | None = None,
        threshold: float = 0.5,
        low_threshold: float = 0.1,
        head_size_factor: float = 0.6,
        pred_name: str = "pred.mat",
        ann_file: str | None = None,
    ) -> None:
        self.gt = load_gt_valid(gt_file) if gt_file is not None else None
        if self.gt is not None and ann_file is not None:
            check_record_order(ann_file, self.gt)
        self.gt_file = gt_file
        self.output_dir = output_dir
        self.threshold = threshold
        self.low_threshold = low_threshold
        self.head_size_factor = head_size_factor
        self.pred_file = None if output_dir is None else os.path.join(output_dir, pred_name)
        self.kept: np.ndarray | None = None  # every instance (see ``restrict``)
        self.reset()

    primary_metric = "Mean"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics ``evaluate`` reports, each higher-is-better (a ``trainer.monitor`` choice)."""
        joints = tuple(f"PCKh/{name}" for name in MPII_SPEC.names)
        return ("Mean", f"Mean@{self.low_threshold:g}", *COLUMNS, *joints)

    def reset(self) -> None:
        """Forget every processed prediction."""
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def restrict(self, instances: Sequence[int], image_ids: Sequence[int]) -> None:
        """Score these instances only (``trainer.max_val_instances``: record indices of the
        split, which are ``gt_valid.mat``'s, ascending); the predictions then come indexed
        0 .. len(instances) - 1 in that order (``data.topdown.InstanceSubset``). ``image_ids``
        unused."""
        self.kept = np.unique(np.asarray(list(instances), dtype=np.int64))
        if self.gt is not None:
            gt, keep = self.gt, self.kept
            if keep.size and keep[-1] >= gt.num_instances:
                raise ValueError(
                    f"restrict: instance {int(keep[-1])} is not in {self.gt_file} "
                    f"({gt.num_instances} instances)"
                )
            self.gt = MpiiGroundTruth(
                gt.joint_names,
                gt.jnt_missing[:, keep],
                gt.pos_gt_src[:, :, keep],
                gt.headboxes_src[:, :, keep],
            )

    def add(self, indices: Any, keypoints: Any, valid: Any = None) -> None:
        """Add a batch of N predictions.

        Args:
            indices: (N,) int, the instances' positions in the split's json (= columns of
                ``gt_valid.mat``), so batches may arrive in any order (e.g. gathered from ranks).
            keypoints: (N, 16, 2) float, (x, y) in 0-based original-image pixels; finite.
            valid: (N,) bool or None (all valid); an invalid row (its image was unreadable and
                skipped) has no prediction: NaN in ``pred.mat``, every joint a miss.
        """
        idx = as_array(indices, "indices", np.int64).reshape(-1)
        kpts = as_array(keypoints, "keypoints", np.float64)
        want = (idx.shape[0], MPII_SPEC.num_keypoints, 2)
        if kpts.shape != want:
            raise ValueError(f"add(): keypoints has shape {kpts.shape}, expected {want}")
        ok = np.ones(idx.shape[0], bool) if valid is None else as_array(valid, "valid", bool)
        if not np.isfinite(kpts[ok]).all():
            raise ValueError("add(): keypoints holds non-finite values")
        kpts = np.where(ok.reshape(-1, 1, 1), kpts, np.nan)
        self._parts.append((idx, kpts))

    def process(self, predictions: Predictions) -> None:
        """Add a batch of ``Predictions`` (``posematch.inference.predict_loader``)."""
        self.add(predictions.index, predictions.keypoints, predictions.valid)

    def _ordered(self) -> np.ndarray:
        """(N, 16, 2) predictions in index order; every index exactly once."""
        if not self._parts:
            raise RuntimeError("MpiiPCKhEvaluator.evaluate(): no predictions were processed")
        idx = np.concatenate([p[0] for p in self._parts])
        kpts = np.concatenate([p[1] for p in self._parts])
        if self.gt is not None:
            n = self.gt.num_instances
        else:
            n = self.kept.size if self.kept is not None else int(idx.max()) + 1
        counts = np.bincount(idx[(idx >= 0) & (idx < n)], minlength=n)
        bad = {
            "outside [0, N)": int(((idx < 0) | (idx >= n)).sum()),
            "given twice or more": int((counts > 1).sum()),
            "missing": int((counts == 0).sum()),
        }
        if any(bad.values()):
            where = self.gt_file or "the test split"
            detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
            raise ValueError(f"indices do not cover the N={n} instances of {where}: {detail}")
        out = np.empty_like(kpts)
        out[idx] = kpts
        return out

    def evaluate(self) -> dict[str, float | bool]:
        """Write ``pred.mat`` and score it.

        Returns:
            per-joint ``"PCKh/<joint>"``, ``Head`` ... ``Ankle``, ``Mean``, ``Mean@<low>`` (percent)
            and ``"scored": True``; ``{"scored": False}`` without ground truth (test split).
        """
        preds = self._ordered() + 1.0  # 0-based pixels -> MATLAB 1-based, as the official code
        if self.pred_file is not None:
            os.makedirs(os.path.dirname(self.pred_file) or ".", exist_ok=True)
            savemat(self.pred_file, mdict={"preds": preds})
        if self.gt is None:
            log.warning("MPII: no ground truth (test split): wrote %s, not scored", self.pred_file)
            return {"scored": False}
        table = pckh(
            np.transpose(preds, (1, 2, 0)),
            self.gt,
            self.threshold,
            self.low_threshold,
            self.head_size_factor,
        )
        return {**table, "scored": True}
