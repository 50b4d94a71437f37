"""The diagnosis metrics against hand-worked truths (OKS, oracle AP via pycocotools, recall at OKS,
joint errors, a known bias, heatmap mass shares)."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posematch.evaluation.coco import coco_keypoint_stats
from posematch.evaluation.diagnosis import (
    best_matches,
    ground_truth,
    heatmap_health,
    joint_errors,
    mean_error,
    oks_matrix,
    oracle_results,
    recall_at_oks,
)
from posematch.inference import heatmap_mass_shares


def _coco(persons: list[tuple[int, list[float], float]]) -> COCO:
    """An in-memory keypoint GT: (image_id, flat [x, y, v] * K, area) per person."""
    images = sorted({p[0] for p in persons})
    anns = [
        {"id": i + 1, "image_id": img, "category_id": 1, "iscrowd": 0, "area": area,
         "bbox": [0.0, 0.0, 100.0, 100.0], "keypoints": kpts,
         "num_keypoints": sum(1 for v in kpts[2::3] if v > 0)}
        for i, (img, kpts, area) in enumerate(persons)
    ]  # fmt: skip
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "width": 640, "height": 480} for i in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _result(image_id: int, xy: list[tuple[float, float]], score: float) -> dict:
    flat = [c for x, y in xy for c in (x, y, 1.0)]
    return {"image_id": image_id, "category_id": 1, "keypoints": flat, "score": score}


def test_oks_of_a_displaced_prediction_is_the_hand_computed_value():
    # Area 10000, sigmas 0.1 and 0.05: (2 s)^2 = 0.04 and 0.01.
    sigmas = (0.1, 0.05)
    gt_xy = np.array([[[100.0, 100.0], [50.0, 50.0]]])
    pred = np.array([[[103.0, 104.0], [52.0, 50.0]]])  # 5 px off, then 2 px off
    # Joint 0: e = 25 / 0.04 / 10000 / 2 = 0.03125; joint 1: e = 4 / 0.01 / 10000 / 2 = 0.02.
    both = oks_matrix(gt_xy, np.array([[True, True]]), np.array([10000.0]), pred, sigmas)
    assert both[0, 0] == pytest.approx((math.exp(-0.03125) + math.exp(-0.02)) / 2, abs=1e-12)
    # An unlabelled GT joint does not count.
    first = oks_matrix(gt_xy, np.array([[True, False]]), np.array([10000.0]), pred, sigmas)
    assert first[0, 0] == pytest.approx(math.exp(-0.03125), abs=1e-12)
    # pycocotools computes the same number for the same pair.
    gt = _coco([(1, [100.0, 100.0, 2, 50.0, 50.0, 0], 10000.0)])
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([_result(1, [(103, 104), (52, 50)], 1.0)]), "keypoints")
        ev.params.kpt_oks_sigmas = np.array(sigmas)
        ev.evaluate()
    assert ev.ious[(1, 1)][0, 0] == pytest.approx(math.exp(-0.03125), abs=1e-12)


def test_best_match_is_the_closest_prediction_of_the_same_image():
    sigmas = (0.1,)
    gt = ground_truth(
        _coco([
            (1, [10.0, 10.0, 2], 10000.0),
            (1, [60.0, 10.0, 2], 10000.0),
            (2, [30.0, 30.0, 1], 10000.0),
            (3, [30.0, 30.0, 2], 10000.0),  # no prediction in image 3
            (2, [0.0, 0.0, 0], 10000.0),  # no labelled joint: not scored
        ]),
        num_keypoints=1,
    )  # fmt: skip
    assert len(gt) == 4
    pred_ids = np.array([2, 1, 1])
    pred = np.array([[[30.0, 30.0]], [[60.0, 14.0]], [[13.0, 14.0]]])
    index, oks = best_matches(gt, pred_ids, pred, sigmas)
    assert index.tolist() == [2, 1, 0, -1]
    # 5 px and 4 px off: e = d^2 / 800.
    assert oks == pytest.approx([math.exp(-25 / 800), math.exp(-16 / 800), 1.0, 0.0], abs=1e-12)


def test_oracle_scores_fix_a_wrong_ranking_in_pycocotools_ap():
    # One person per image, area 10000, sigma 0.1: OKS = exp(-d^2 / 800).
    sigmas = (0.1,)
    coco = _coco([(1, [100.0, 100.0, 2], 10000.0), (2, [100.0, 100.0, 2], 10000.0)])
    good = _result(1, [(104.0, 100.0)], 0.1)  # d = 4: OKS exp(-0.02) = 0.980, matches at all t
    bad = _result(2, [(100.0, 120.0)], 0.9)  # d = 20: OKS exp(-0.5) = 0.607, t <= 0.60 only
    # Max-score ranking: bad, good. At t = .50 .55 .60 both are true positives: AP 1. At the 7
    # thresholds above, the false positive comes first: precision 1/2 up to recall 1/2, so 51 of
    # the 101 recall points have precision 0.5.
    own = coco_keypoint_stats(coco, [bad, good], sigmas)
    assert own["AP"] == pytest.approx((3 * 1.0 + 7 * 0.5 * 51 / 101) / 10, abs=1e-12)
    oracle = oracle_results([bad, good], ground_truth(coco, 1), sigmas)
    assert [r["score"] for r in oracle] == pytest.approx([math.exp(-0.5), math.exp(-0.02)])
    assert (bad["score"], good["score"]) == (0.9, 0.1)  # the input is left alone
    # OKS ranking: good first: precision 1 up to recall 1/2 at the 7 upper thresholds.
    best = coco_keypoint_stats(coco, oracle, sigmas)
    assert best["AP"] == pytest.approx((3 * 1.0 + 7 * 51 / 101) / 10, abs=1e-12)


def test_oracle_score_is_zero_without_ground_truth_in_the_image():
    coco = _coco([(1, [100.0, 100.0, 2], 10000.0)])
    out = oracle_results([_result(7, [(0.0, 0.0)], 0.8)], ground_truth(coco, 1), (0.1,))
    assert out[0]["score"] == 0.0


def test_recall_at_oks_thresholds():
    recall = recall_at_oks(np.array([0.3, 0.52, 0.74, 0.91, 0.97]))
    assert list(recall) == [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]
    want = [0.8, 0.6, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4, 0.4, 0.2]
    assert list(recall.values()) == pytest.approx(want, abs=1e-12)
    assert recall_at_oks(np.array([]))["0.50"] is None


def test_joint_error_median_and_p90_in_pixels_and_over_sqrt_area():
    gt = np.zeros((5, 2, 2))
    pred = np.zeros((5, 2, 2))
    pred[:, 0, 0] = [1.0, 2.0, 3.0, 4.0, 5.0]  # joint 0: errors 1..5 px
    pred[0, 1] = [6.0, 8.0]  # joint 1: 10 px, labelled only in instance 0
    visible = np.zeros((5, 2), dtype=bool)
    visible[:, 0] = True
    visible[0, 1] = True
    out = joint_errors(pred, gt, visible, np.full(5, 100.0), ["a", "b"])
    # Joint a: median 3; p90 at rank 0.9 * 4 = 3.6 -> 4 + 0.6 = 4.6; sqrt(area) = 10.
    assert out["a"]["median_px"] == pytest.approx(3.0) and out["a"]["p90_px"] == pytest.approx(4.6)
    assert out["a"]["median_rel"] == pytest.approx(0.3)
    assert out["a"]["p90_rel"] == pytest.approx(0.46)
    assert out["b"]["median_px"] == pytest.approx(10.0) and out["b"]["count"] == 1
    # All: 1, 2, 3, 4, 5, 10 -> median 3.5; p90 at rank 4.5 -> 5 + 0.5 * 5 = 7.5.
    assert out["all"]["median_px"] == pytest.approx(3.5) and out["all"]["p90_px"] == pytest.approx(
        7.5
    )
    assert out["all"]["count"] == 6
    none = joint_errors(pred, gt, np.zeros((5, 2), dtype=bool), np.full(5, 100.0), ["a", "b"])
    assert none["a"]["median_px"] is None and none["a"]["count"] == 0


def test_a_constant_bias_of_1_5_px_in_x():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 200, size=(2, 3, 2))
    pred = gt + np.array([1.5, 0.0])
    visible = np.array([[True, True, False], [True, False, True]])
    pred[0, 2] += 100.0  # an unlabelled joint: ignored
    # Image -> heatmap: a quarter for instance 0; a quarter and a 90 degree turn for instance 1.
    to_heatmap = np.array([[[0.25, 0.0], [0.0, 0.25]], [[0.0, -0.25], [0.25, 0.0]]])
    out = mean_error(pred, gt, visible, to_heatmap)
    assert out["signed_image_px"] == pytest.approx([1.5, 0.0], abs=1e-12)
    # Instance 0: (0.375, 0) twice; instance 1: (0, 0.375) twice.
    assert out["signed_heatmap_px"] == pytest.approx([0.1875, 0.1875], abs=1e-12)
    assert out["abs_heatmap_px"] == pytest.approx([0.1875, 0.1875], abs=1e-12)
    assert out["joints"] == 4
    assert "signed_heatmap_px" not in mean_error(pred, gt, visible)


def test_heatmap_mass_shares_and_health_of_known_heatmaps():
    heatmaps = torch.zeros(1, 3, 5, 6)
    heatmaps[0, 0, 1:3, 2:4] = torch.tensor([[4.0, 2.0], [1.0, 1.0]])  # top 4/8, window 8/8
    heatmaps[0, 1] = -1.0  # all negative: dead
    heatmaps[0, 2] = -0.5  # negatives do not count; 3 and 1 far apart: top 3/4, window 3/4
    heatmaps[0, 2, 0, 0] = 3.0
    heatmaps[0, 2, 4, 5] = 1.0
    top, window = heatmap_mass_shares(heatmaps)
    assert top[0, 0].item() == pytest.approx(0.5) and window[0, 0].item() == pytest.approx(1.0)
    assert math.isnan(top[0, 1].item()) and math.isnan(window[0, 1].item())
    assert top[0, 2].item() == pytest.approx(0.75) and window[0, 2].item() == pytest.approx(0.75)
    health = heatmap_health(top.numpy(), window.numpy())
    assert health["dead_share"] == pytest.approx(1 / 3)
    assert health["top_mass"] == pytest.approx((0.5 + 0.75) / 2)
    assert health["window_mass"] == pytest.approx((1.0 + 0.75) / 2)
    assert health["heatmaps"] == 3
    dead = heatmap_health(np.full(4, np.nan), np.full(4, np.nan))
    assert dead["dead_share"] == 1.0 and dead["top_mass"] is None and dead["window_mass"] is None
