"""OKS and OKS-NMS against pycocotools' computeOks, hand-worked values and the official greedy loop."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posematch.evaluation import nms
from posematch.evaluation.nms import oks_nms, oks_nms_per_image, oks_one_to_many
from posematch.keypoints import COCO as COCO_SPEC
from tests.conftest import SHARED_DATA

ANN = SHARED_DATA / "coco_sample" / "test_coco.json"
SIGMAS = np.array(COCO_SPEC.sigmas)


def gt_instances() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anns = [a for a in json.loads(ANN.read_text())["annotations"] if a["num_keypoints"] > 0]
    ids = np.array([a["image_id"] for a in anns])
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)[..., :2]
    return ids, kpts, np.array([a["area"] for a in anns])


def test_oks_equals_pycocotools_computeoks(rng):
    # One fully visible GT person; pycocotools divides by the GT area, ours by the mean area,
    # so both areas are set to the GT area.
    g = rng.uniform(50, 250, size=(17, 2))
    area = 9000.0
    dts = g + rng.normal(0, np.array([0.0, 2.0, 5.0, 10.0, 25.0])[:, None, None], size=(5, 17, 2))
    ann = {
        "id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": area,
        "bbox": [40.0, 40.0, 220.0, 220.0], "num_keypoints": 17,
        "keypoints": np.concatenate([g, np.full((17, 1), 2.0)], 1).ravel().tolist(),
    }  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": 1, "width": 300, "height": 300}],
            "categories": [{"id": 1, "name": "person"}],
            "annotations": [ann],
        }
        gt.createIndex()
        res = [
            {"image_id": 1, "category_id": 1, "score": 1.0 - 0.1 * i,
             "keypoints": np.concatenate([d, np.ones((17, 1))], 1).ravel().tolist()}
            for i, d in enumerate(dts)
        ]  # fmt: skip
        ev = COCOeval(gt, gt.loadRes(res), "keypoints")
        ev.evaluate()
    expected = ev.ious[(1, 1)][:, 0]  # dts sorted by decreasing score = our order
    got = oks_one_to_many(g, area, dts, np.full(5, area), SIGMAS)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)
    assert got[0] == 1.0


def test_oks_hand_worked_with_mean_area_and_in_vis_thre():
    # K=2, sigmas (0.1, 0.05), areas 100 and 300 (mean 200); joint 0 off by 2 px:
    # e0 = 4 / (2*0.1)^2 / 200 / 2 = 0.25, e1 = 0 -> OKS = (exp(-0.25) + 1) / 2.
    g = np.array([[10.0, 10.0], [20.0, 20.0]])
    d = np.array([[[12.0, 10.0], [20.0, 20.0]]])
    sig = (0.1, 0.05)
    got = oks_one_to_many(g, 100.0, d, np.array([300.0]), sig)
    assert got[0] == pytest.approx(0.8894003915357024, abs=1e-15)
    # Official in_vis_thre: `list(vg > t) and list(vd > t)` is the candidate's list alone.
    only_1 = oks_one_to_many(g, 100.0, d, [300.0], sig, np.array([[0.1, 0.9]]), 0.2)
    assert only_1[0] == pytest.approx(1.0, abs=1e-15)
    none = oks_one_to_many(g, 100.0, d, [300.0], sig, np.array([[0.2, 0.2]]), 0.2)  # strict >
    assert none[0] == 0.0
    with pytest.raises(ValueError, match="sigmas"):
        oks_one_to_many(g, 100.0, d, [300.0], (0.1,))


def test_nms_removes_exact_duplicates_and_keeps_distinct_people():
    ids, kpts, areas = gt_instances()
    for image in np.unique(ids):
        people, a = kpts[ids == image], areas[ids == image]
        n = len(people)
        scores = np.linspace(0.9, 0.5, n)
        # Every person again, exactly, with a lower score: only the originals survive.
        all_k = np.concatenate([people, people])
        all_s = np.concatenate([scores, scores - 0.3])
        keep = oks_nms(all_k, all_s, np.concatenate([a, a]), SIGMAS, 0.9)
        assert keep.tolist() == list(range(n))
        # Duplicates scored higher than the originals: the duplicates are the ones kept.
        keep = oks_nms(
            all_k, np.concatenate([scores - 0.3, scores]), np.concatenate([a, a]), SIGMAS
        )
        assert keep.tolist() == list(range(n, 2 * n))


def test_nms_threshold_is_inclusive_keep_and_greedy():
    # OKS of the two instances is 0.88940 (hand-worked above): kept at 0.9, suppressed at 0.88.
    g = np.array([[[10.0, 10.0], [20.0, 20.0]], [[12.0, 10.0], [20.0, 20.0]]])
    args = (g, np.array([0.9, 0.8]), np.array([100.0, 300.0]), (0.1, 0.05))
    assert oks_nms(*args, thr=0.9).tolist() == [0, 1]
    assert oks_nms(*args, thr=0.88).tolist() == [0]
    # K=1, sigma 0.1, area 100: OKS = exp(-d^2 / 8). x = 0, 0.6, 1.2 scored 3 > 2 > 1:
    # A-B and B-C are 0.956 (> 0.9), A-C 0.835. B goes with A, so it cannot remove C.
    line = np.array([[[0.0, 0.0]], [[0.6, 0.0]], [[1.2, 0.0]]])
    keep = oks_nms(line, np.array([3.0, 2.0, 1.0]), np.full(3, 100.0), (0.1,), 0.9)
    assert keep.tolist() == [0, 2]
    assert oks_nms(np.zeros((0, 1, 2)), np.zeros(0), np.zeros(0), (0.1,)).tolist() == []


def official_oks_nms(kpts, scores, areas, sigmas, thr, kpt_scores=None, in_vis_thre=None):
    """The official lib/nms/nms.py loop (oks_nms + oks_iou with its per-candidate loop), transcribed."""
    variances = (np.asarray(sigmas) * 2) ** 2
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        ious = np.zeros(order.size - 1)
        for n_d, j in enumerate(order[1:]):
            dx = kpts[j, :, 0] - kpts[i, :, 0]
            dy = kpts[j, :, 1] - kpts[i, :, 1]
            e = (dx**2 + dy**2) / variances / ((areas[i] + areas[j]) / 2 + np.spacing(1)) / 2
            if in_vis_thre is not None:
                ind = list(kpt_scores[i] > in_vis_thre) and list(kpt_scores[j] > in_vis_thre)
                e = e[ind]
            ious[n_d] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
        order = order[np.where(ious <= thr)[0] + 1]
    return [int(i) for i in keep]


def crowd(rng, n: int, people: int = 12):
    """n detections of a few people, 0-2 px jitter: plenty to suppress, and plenty kept."""
    base = rng.uniform(0, 400, size=(people, 17, 2))
    jitter = rng.normal(0, rng.uniform(0, 2, (n, 1, 1)), (n, 17, 2))
    kpts = base[rng.integers(0, people, n)] + jitter
    return kpts, rng.uniform(0, 1, n), rng.uniform(2000, 20000, n)


@pytest.mark.parametrize("n", [120, nms.MATRIX_MAX_INSTANCES + 88])
def test_nms_matches_the_official_loop_on_crowded_images(rng, n):
    kpts, scores, areas = crowd(rng, n)
    keep = oks_nms(kpts, scores, areas, SIGMAS, 0.9)
    assert keep.tolist() == official_oks_nms(kpts, scores, areas, SIGMAS, 0.9)
    assert 12 <= len(keep) < n // 2


def test_nms_with_in_vis_thre_matches_the_official_loop(rng):
    kpts, scores, areas = crowd(rng, 150)
    kpt_scores = rng.uniform(0, 1, (150, 17))
    keep = oks_nms(kpts, scores, areas, SIGMAS, 0.9, kpt_scores, 0.5)
    expected = official_oks_nms(kpts, scores, areas, SIGMAS, 0.9, kpt_scores, 0.5)
    assert keep.tolist() == expected
    assert keep.tolist() != official_oks_nms(kpts, scores, areas, SIGMAS, 0.9)  # it matters


def test_nms_per_image_in_blocks_matches_the_official_loop_per_image(rng, monkeypatch):
    # Images of 1 to 60 instances, interleaved; a small block budget forces several blocks.
    monkeypatch.setattr(nms, "BLOCK_ELEMENTS", 20_000)
    sizes = [5, 1, 60, 17, 2, 33, 8, 41]
    parts = [crowd(rng, s, people=3) for s in sizes]
    image_of = np.concatenate([np.full(s, 100 + i) for i, s in enumerate(sizes)])
    mix = rng.permutation(len(image_of))
    ids = image_of[mix]
    kpts, scores, areas = (np.concatenate([p[f] for p in parts])[mix] for f in range(3))
    keep = oks_nms_per_image(ids, kpts, scores, areas, SIGMAS, 0.9)
    expected = []
    for image in dict.fromkeys(ids.tolist()):  # images in order of first appearance
        idx = np.flatnonzero(ids == image)
        expected += idx[official_oks_nms(kpts[idx], scores[idx], areas[idx], SIGMAS, 0.9)].tolist()
    assert keep.tolist() == expected
