"""COCO keypoint evaluation, as the SimpleBaseline / HRNet top-down protocol scores val2017.

Steps of the official ``lib/dataset/coco.py`` ``evaluate`` (Xiao et al. 2018; Sun et al. 2019):
1. rescoring: instance score = box score x mean of the keypoint scores ``> in_vis_thre`` (0.2);
   when no keypoint passes, the official code leaves the keypoint factor at 0 (``fallback="zero"``);
   ``fallback="all"`` uses the mean of all keypoint scores instead;
2. OKS-NMS per image at 0.9 with the dataset's sigmas and the instances' areas
   (``posematch.evaluation.nms``; the official call passes no ``in_vis_thre`` to it, so every
   joint counts in the OKS of NMS);
3. the results file in the COCO results format ``[{image_id, category_id, keypoints, score}]``,
   ``keypoints`` = [x1, y1, s1, ..., xK, yK, sK] (image pixels, keypoint scores);
4. pycocotools ``COCOeval(gt, dt, "keypoints")`` -> the 10 standard stats.
An annotation file with no annotations (test-dev image info) gets the results file only.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posematch.evaluation.arrays import as_array
from posematch.evaluation.nms import oks_nms_per_image
from posematch.keypoints import COCO as COCO_SPEC
from posematch.keypoints import KeypointSpec
from posematch.types import Predictions

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


def rescore(
    box_scores: np.ndarray,
    kpt_scores: np.ndarray,
    in_vis_thre: float = 0.2,
    fallback: Literal["zero", "all"] = "zero",
) -> np.ndarray:
    """Official instance rescoring: box score x mean of the keypoint scores above ``in_vis_thre``.

    Args:
        box_scores: (N,) detector (or ground-truth box: 1) scores.
        kpt_scores: (N, K) keypoint scores (heatmap maxima).
        in_vis_thre: a keypoint counts when its score is ``> in_vis_thre`` (strict, official 0.2).
        fallback: when no keypoint counts, ``"zero"`` (official HRNet / mmpose: score 0) or
            ``"all"`` (the mean of all K keypoint scores).

    Returns:
        (N,) float64 instance scores.
    """
    box = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    kps = np.asarray(kpt_scores, dtype=np.float64)
    if kps.ndim != 2 or kps.shape[0] != box.shape[0]:
        raise ValueError(
            f"rescore: box_scores {box.shape}, kpt_scores {kps.shape}: want (N,), (N, K)"
        )
    if fallback not in ("zero", "all"):
        raise ValueError(f"fallback={fallback!r}: expected 'zero' or 'all'")
    passed = kps > in_vis_thre
    count = passed.sum(1)
    mean_passed = np.where(passed, kps, 0.0).sum(1) / np.maximum(count, 1)
    none_passed = kps.mean(1) if fallback == "all" else np.zeros_like(box)
    return box * np.where(count > 0, mean_passed, none_passed)


def results_list(
    image_ids: np.ndarray,
    kpts: np.ndarray,
    kpt_scores: np.ndarray,
    scores: np.ndarray,
    category_id: int = 1,
) -> list[dict[str, Any]]:
    """COCO keypoint results ``[{image_id, category_id, keypoints (3K floats), score}]``."""
    n, k = kpt_scores.shape
    flat = np.concatenate([kpts, kpt_scores[..., None]], axis=2).reshape(n, 3 * k).tolist()
    ids = np.asarray(image_ids).tolist()
    return [
        {"image_id": int(i), "category_id": category_id, "keypoints": f, "score": float(s)}
        for i, f, s in zip(ids, flat, np.asarray(scores).tolist(), strict=True)
    ]


def write_results(results: list[dict[str, Any]], path: str) -> None:
    """Write COCO results as JSON (full float precision), creating the folder if needed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        # json.dumps, not json.dump: only the one-shot encoder runs in C (several times faster).
        f.write(json.dumps(results))


BACKENDS = ("pycocotools", "faster_coco_eval")


def coco_keypoint_stats(
    gt: COCO,
    results: list[dict[str, Any]],
    sigmas: Sequence[float] | None = None,
    backend: str = "pycocotools",
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """``COCOeval(gt, dt, "keypoints")`` on ``results``; the 10 stats by name.

    ``sigmas``: per-joint OKS sigmas; None keeps pycocotools' COCO-17 values (a dataset with another
    joint count must pass its own). ``backend``: ``"pycocotools"`` (the reference) or
    ``"faster_coco_eval"`` (the same protocol in C++, the ``fast`` extra; its 10 stats equal
    pycocotools' on the same results, which a test checks). ``image_ids``: score these images
    only (COCOeval's ``params.imgIds``); None: every image of ``gt``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        if backend == "faster_coco_eval":
            faster_coco, faster_eval = _faster_coco_eval()
            gt = faster_coco(gt.dataset)
            make_eval = partial(faster_eval, print_function=print)
        else:
            make_eval = COCOeval
        # loadRes adds area / bbox / id to each dict: hand it copies.
        dt = gt.loadRes([dict(r) for r in results])
        coco_eval = make_eval(gt, dt, "keypoints")
        if sigmas is not None:
            coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if image_ids is not None:  # these images only (their ground truth and detections)
            coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # About 20 lines per validation: kept out of the user's log; the stats go to the records.
    log.debug("COCOeval keypoints (%s):\n%s", backend, out.getvalue())
    return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}


def _faster_coco_eval() -> tuple[Any, Any]:
    """faster-coco-eval's COCO and COCOeval classes; ImportError saying how to install them."""
    try:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError as err:
        raise ImportError(
            "backend=faster_coco_eval needs the faster-coco-eval package: pip install "
            "'posematch[fast]' (make install does), or use backend=pycocotools"
        ) from err
    return FasterCOCO, COCOeval_faster


def _is_number(value: Any) -> bool:
    """A JSON number: int or float, not a string or a boolean (numpy would convert both)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_annotation(ann: dict[str, Any], where: str, num_joints: int | None) -> None:
    """ValueError naming ``where`` and the field when an annotation field COCOeval reads is not
    what it must be: ``keypoints`` a list of 3K numbers, ``bbox`` 4 numbers, ``area`` a number,
    ``num_keypoints`` and ``iscrowd`` integers, every number finite. (A string in ``keypoints``
    failed inside COCOeval after the whole inference; a string ``num_keypoints`` made the
    annotations it should ignore count as missed, silently lowering AP.)"""
    shapes = {"keypoints": None if num_joints is None else 3 * num_joints, "bbox": 4}
    for field, length in shapes.items():
        if field not in ann:
            continue
        value = ann[field]
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise ValueError(f"{where}: {field!r} must be a list of numbers, got {value!r:.80}")
        if length is not None and len(value) != length:
            raise ValueError(f"{where}: {field!r} holds {len(value)} numbers, expected {length}")
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError(f"{where}: {field!r} holds a non-finite value")
    if "area" in ann and not (_is_number(ann["area"]) and np.isfinite(ann["area"])):
        if _is_number(ann["area"]):
            raise ValueError(f"{where}: 'area' holds a non-finite value")
        raise ValueError(f"{where}: 'area' must be a number, got {ann['area']!r:.80}")
    for field in ("num_keypoints", "iscrowd"):
        if field in ann and not (isinstance(ann[field], int) and not isinstance(ann[field], bool)):
            raise ValueError(f"{where}: {field!r} must be an integer, got {ann[field]!r:.80}")


def load_ground_truth(ann_file: str, num_joints: int | None = None) -> COCO:
    """The annotation file as pycocotools' COCO, checked before any work: ValueError naming the
    file and the annotation when an id repeats, an ``image_id`` is not in ``images``, a field
    COCOeval reads has the wrong type, length (``num_joints``, when given) or a non-finite value
    (COCOeval would score a NaN OKS as a match), or annotations come without ``categories``."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(ann_file)
    except json.JSONDecodeError as err:
        raise ValueError(f"ann_file={ann_file}: not valid JSON ({err})") from err
    except (KeyError, TypeError) as err:
        raise ValueError(f"ann_file={ann_file}: not a COCO annotation file ({err!r})") from err
    for section in ("images", "annotations"):  # pycocotools keeps one record per id, silently
        counts = Counter(record.get("id") for record in gt.dataset.get(section, []))
        repeated = sorted((i for i, n in counts.items() if n > 1), key=str)
        if repeated:
            raise ValueError(
                f"ann_file={ann_file}: {section} ids {repeated[:5]} occur more than once "
                f"({len(repeated)} ids): every id must be unique"
            )
    if gt.dataset.get("annotations") and not gt.dataset.get("categories"):
        raise ValueError(
            f"ann_file={ann_file}: no 'categories' list: COCOeval scores per category "
            '(COCO keypoints: [{"id": 1, "name": "person", ...}])'
        )
    for ann in gt.dataset.get("annotations", []):
        where = f"ann_file={ann_file}: annotation id {ann.get('id')}"
        if ann.get("image_id") not in gt.imgs:
            raise ValueError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
        _check_annotation(ann, where, num_joints)
    return gt


class CocoKeypointEvaluator:
    """Accumulates top-down predictions and scores them with the official COCO protocol.

    Args:
        ann_file: ``person_keypoints_{split}.json`` (or the test-dev image-info file).
        output_dir: folder of the results file (created if missing).
        sigmas: per-joint OKS sigmas of the dataset (default COCO's 17), for OKS-NMS and COCOeval.
        spec: the dataset's ``KeypointSpec``; when given, its sigmas replace ``sigmas`` (how a
            config hands a custom dataset's sigmas over).
        nms_thr: OKS-NMS threshold (official 0.9); ``None`` turns NMS off.
        in_vis_thre: keypoint-score threshold of the rescoring (official 0.2).
        rescore_fallback: keypoint factor when no keypoint passes ``in_vis_thre``: ``"zero"``
            (official) or ``"all"`` (mean of all keypoint scores). See ``rescore``.
        category_id: the person category id written in the results (COCO: 1).
        results_name: file name of the results (official
            ``keypoints_{image_set}_results_{rank}.json``).
        backend: the COCOeval implementation: ``"pycocotools"`` (default, the reference) or
            ``"faster_coco_eval"`` (equal stats, faster on full val2017; the ``fast`` extra).
    """

    def __init__(
        self,
        ann_file: str,
        output_dir: str,
        sigmas: Sequence[float] = COCO_SPEC.sigmas,
        spec: KeypointSpec | None = None,
        nms_thr: float | None = 0.9,
        in_vis_thre: float = 0.2,
        rescore_fallback: Literal["zero", "all"] = "zero",
        category_id: int = 1,
        results_name: str = "keypoints_results.json",
        backend: str = "pycocotools",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"ann_file={ann_file}: annotation file not found")
        if rescore_fallback not in ("zero", "all"):
            raise ValueError(f"rescore_fallback={rescore_fallback!r}: expected 'zero' or 'all'")
        self.ann_file = ann_file
        self.output_dir = output_dir
        if spec is not None:
            if not spec.sigmas:
                raise ValueError(f"spec {spec.name!r}: no OKS sigmas, so no COCO-style evaluation")
            sigmas = spec.sigmas
        self.sigmas = tuple(float(s) for s in sigmas)
        self.nms_thr = nms_thr
        self.in_vis_thre = in_vis_thre
        self.rescore_fallback = rescore_fallback
        self.category_id = category_id
        self.results_file = os.path.join(output_dir, results_name)
        self.backend = backend
        self.gt = load_ground_truth(ann_file, len(self.sigmas))
        self.image_ids: list[int] | None = None  # every image (see ``restrict``)
        self.reset()

    primary_metric = "AP"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics ``evaluate`` reports, each higher-is-better (a ``trainer.monitor`` choice)."""
        return STAT_NAMES

    @property
    def has_annotations(self) -> bool:
        """False for an image-info file (test-dev): results are written but not scored."""
        return len(self.gt.dataset.get("annotations", [])) > 0

    def reset(self) -> None:
        """Forget every processed prediction."""
        self._parts: list[tuple[np.ndarray, ...]] = []

    def restrict(self, instances: Sequence[int], image_ids: Sequence[int]) -> None:
        """Score these images only (``trainer.max_val_instances``); ``instances`` unused."""
        self.image_ids = sorted({int(i) for i in image_ids})

    def add(
        self,
        image_ids: Any,
        keypoints: Any,
        keypoint_scores: Any,
        box_scores: Any,
        areas: Any,
        valid: Any = None,
    ) -> None:
        """Add a batch of N person instances (numpy arrays, torch tensors on any device, or lists).

        Args:
            image_ids: (N,) int, COCO image ids.
            keypoints: (N, K, 2) float, (x, y) in original-image pixels (COCO's own convention,
                nothing added or subtracted).
            keypoint_scores: (N, K) float, per-joint confidences (heatmap maxima).
            box_scores: (N,) float, the person detector's score (1 for ground-truth boxes).
            areas: (N,) float, image pixels^2, used by OKS-NMS (official: (scale * 200)^2 of the
                padded box).
            valid: (N,) bool or None (all valid); invalid rows (unreadable images that were
                skipped) are dropped, so their people count as missed.
        """
        ids = as_array(image_ids, "image_ids", np.int64).reshape(-1)
        kpts = as_array(keypoints, "keypoints", np.float64)
        kps = as_array(keypoint_scores, "keypoint_scores", np.float64)
        box = as_array(box_scores, "box_scores", np.float64).reshape(-1)
        area = as_array(areas, "areas", np.float64).reshape(-1)
        n, k = ids.shape[0], len(self.sigmas)
        want = {"keypoints": (n, k, 2), "keypoint_scores": (n, k), "box_scores": (n,)}
        for name, arr in (("keypoints", kpts), ("keypoint_scores", kps), ("box_scores", box)):
            if arr.shape != want[name]:
                raise ValueError(
                    f"add(): {name} has shape {arr.shape}, expected {want[name]} "
                    f"(N={n} image_ids, K={k} sigmas)"
                )
        if area.shape != (n,):
            raise ValueError(f"add(): areas has shape {area.shape}, expected ({n},)")
        if valid is not None:
            ok = as_array(valid, "valid", bool).reshape(-1)
            ids, kpts, kps, box, area = ids[ok], kpts[ok], kps[ok], box[ok], area[ok]
        arrays = (("keypoints", kpts), ("keypoint_scores", kps), ("box_scores", box))
        for name, arr in (*arrays, ("areas", area)):
            if not np.isfinite(arr).all():
                # NaN would be written as a bare NaN token, which is not JSON, and a NaN OKS
                # counts as a match in COCOeval.
                raise ValueError(f"add(): {name} holds non-finite values")
        self._parts.append((ids, kpts, kps, box, area))

    def process(self, predictions: Predictions) -> None:
        """Add a batch of ``Predictions`` (``posematch.inference.predict_loader``)."""
        self.add(
            predictions.image_id,
            predictions.keypoints,
            predictions.keypoint_scores,
            predictions.box_score,
            predictions.area,
            predictions.valid,
        )

    def evaluate(self) -> dict[str, float | bool]:
        """Rescore, NMS, write the results file, and score it with COCOeval.

        Returns:
            ``{"AP", ..., "ARL": float, "scored": True}``; or ``{"scored": False}`` when the
            annotation file has no annotations (the results file is still written to
            ``self.results_file``).
        """
        if not self._parts:
            raise RuntimeError("CocoKeypointEvaluator.evaluate(): no predictions were processed")
        ids, kpts, kps, box, area = (np.concatenate(p) for p in zip(*self._parts, strict=True))
        unknown = sorted(set(np.unique(ids).tolist()) - set(self.gt.getImgIds()))
        if unknown:
            raise ValueError(
                f"{len(unknown)} image ids are not in {self.ann_file} 'images' "
                f"(first: {unknown[:5]})"
            )
        scores = rescore(box, kps, self.in_vis_thre, self.rescore_fallback)
        if self.nms_thr is None:
            keep = np.arange(ids.shape[0])
        else:
            keep = oks_nms_per_image(ids, kpts, scores, area, self.sigmas, self.nms_thr)
        results = results_list(ids[keep], kpts[keep], kps[keep], scores[keep], self.category_id)
        write_results(results, self.results_file)
        log.info(
            "%d instances -> %d after OKS-NMS; results in %s",
            len(ids),
            len(keep),
            self.results_file,
        )
        if not self.has_annotations:
            log.warning(
                "%s has no annotations (test-dev?): results written to %s, not scored",
                self.ann_file,
                self.results_file,
            )
            return {"scored": False}
        stats = coco_keypoint_stats(self.gt, results, self.sigmas, self.backend, self.image_ids)
        return {**stats, "scored": True}
