"""COCO evaluator on the real val2017 sample, against pycocotools called directly on the same results."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posematch.evaluation.coco import CocoKeypointEvaluator, rescore
from tests.conftest import SHARED_DATA

ANN = str(SHARED_DATA / "coco_sample" / "test_coco.json")
NAMES = ["AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"]


def annotated() -> list[dict]:
    with open(ANN) as f:
        return [a for a in json.load(f)["annotations"] if a["num_keypoints"] > 0]


def direct_cocoeval(results: list[dict], tmp_path) -> list[float]:
    """pycocotools alone: results file -> loadRes -> COCOeval keypoints -> stats."""
    path = tmp_path / "direct.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ANN)
        ev = COCOeval(gt, gt.loadRes(str(path)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_ground_truth_as_predictions_scores_1(tmp_path):
    anns = annotated()
    assert len(anns) == 12
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
    ev = CocoKeypointEvaluator(ANN, str(tmp_path / "out"))
    ev.add(
        [a["image_id"] for a in anns], kpts[..., :2], np.ones((12, 17)), np.ones(12),
        [a["area"] for a in anns],
    )  # fmt: skip
    stats = ev.evaluate()
    assert stats["scored"] is True
    assert [stats[n] for n in NAMES] == [1.0] * 10
    # The file is the official results format.
    written = json.loads((tmp_path / "out" / "keypoints_results.json").read_text())
    assert len(written) == 12
    assert set(written[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in written)
    assert sorted(r["image_id"] for r in written) == sorted(a["image_id"] for a in anns)


@pytest.mark.parametrize("seed", [0, 1])
def test_perturbed_ground_truth_matches_direct_pycocotools(tmp_path, seed):
    """Known perturbations; the expected results list is built here, by hand, from the inputs."""
    rng = np.random.default_rng(seed)
    anns = annotated()
    n = len(anns)
    ids = np.array([a["image_id"] for a in anns])
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(n, 17, 3)[..., :2]
    areas = np.array([a["area"] for a in anns])
    kpts = kpts + rng.normal(0, 3.0, kpts.shape)  # every joint jittered by ~3 px
    kpts[2] += 40.0  # one person shifted by 40 px: a false positive and a miss
    box = rng.permutation(np.linspace(0.3, 0.95, n))  # distinct scores: no ties in COCOeval
    kscores = np.ones((n, 17))
    kscores[4, :7] = 0.1  # 7 joints below in_vis_thre, 10 at 0.5: factor 0.5
    kscores[4, 7:] = 0.5
    expected_score = box.copy()
    expected_score[4] = box[4] * 0.5
    drop = 7  # person 7 is never predicted
    keep = [i for i in range(n) if i != drop]
    ev = CocoKeypointEvaluator(ANN, str(tmp_path / "out"))
    first, second = keep[: len(keep) // 2], keep[len(keep) // 2 :]  # two batches, as a loader
    ev.add(ids[first], kpts[first], kscores[first], box[first], areas[first])
    # The second batch ends with an exact duplicate of person 0, scored lower: OKS-NMS removes it.
    ev.add(
        np.append(ids[second], ids[0]),
        np.concatenate([kpts[second], kpts[:1]]),
        np.concatenate([kscores[second], kscores[:1]]),
        np.append(box[second], box[0] - 0.01),
        np.append(areas[second], areas[0]),
    )
    stats = ev.evaluate()
    expected_results = [
        {
            "image_id": int(ids[i]),
            "category_id": 1,
            "keypoints": np.concatenate([kpts[i], kscores[i][:, None]], 1).ravel().tolist(),
            "score": float(expected_score[i]),
        }
        for i in keep
    ]
    expected = direct_cocoeval(expected_results, tmp_path)
    assert [stats[n] for n in NAMES] == pytest.approx(expected, abs=1e-12)
    assert stats["AP"] < 0.95  # the perturbations do matter
    # And the file the evaluator wrote, scored by pycocotools alone, gives the same numbers.
    written = json.loads((tmp_path / "out" / "keypoints_results.json").read_text())
    assert len(written) == len(keep)
    assert direct_cocoeval(written, tmp_path) == pytest.approx(expected, abs=1e-12)


def test_rescoring_hand_worked():
    box = np.array([0.8, 0.5, 0.9])
    kps = np.array(
        [
            [0.9, 0.1, 0.5, 0.2],  # 0.9 and 0.5 pass (0.2 does not: strict >): 0.8 * 0.7
            [0.1, 0.2, 0.15, 0.05],  # none pass: official 0; "all": 0.5 * 0.125
            [0.3, 0.3, 0.3, 0.3],  # all pass: 0.9 * 0.3
        ]
    )
    np.testing.assert_allclose(rescore(box, kps), [0.56, 0.0, 0.27], rtol=1e-15)
    np.testing.assert_allclose(rescore(box, kps, fallback="all"), [0.56, 0.0625, 0.27], rtol=1e-15)


def test_test_dev_without_annotations_writes_results_and_skips_scoring(tmp_path):
    with open(ANN) as f:
        info = json.load(f)
    image_info = {k: info[k] for k in ("images", "categories")}  # as image_info_test-dev2017.json
    ann_file = tmp_path / "image_info.json"
    ann_file.write_text(json.dumps(image_info))
    ev = CocoKeypointEvaluator(str(ann_file), str(tmp_path / "out"), results_name="dev.json")
    ev.add(torch.tensor([785, 40083]), torch.rand(2, 17, 2) * 100, torch.rand(2, 17),
               torch.ones(2), torch.full((2,), 1e4))  # fmt: skip
    assert ev.evaluate() == {"scored": False}
    written = json.loads((tmp_path / "out" / "dev.json").read_text())
    assert sorted(r["image_id"] for r in written) == [785, 40083]


def test_bad_inputs_name_the_field(tmp_path):
    ev = CocoKeypointEvaluator(ANN, str(tmp_path))
    with pytest.raises(ValueError, match="keypoints has shape"):
        ev.add([785], np.zeros((1, 16, 2)), np.ones((1, 17)), [1.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        ev.add([785], np.full((1, 17, 2), np.nan), np.ones((1, 17)), [1.0], [1.0])
    with pytest.raises(RuntimeError, match="no predictions"):
        ev.evaluate()
    ev.add([123456], np.zeros((1, 17, 2)), np.ones((1, 17)), [1.0], [1.0])
    with pytest.raises(ValueError, match="123456"):
        ev.evaluate()
    with pytest.raises(FileNotFoundError, match="ann_file"):
        CocoKeypointEvaluator(str(tmp_path / "missing.json"), str(tmp_path))


def test_a_four_joint_dataset_is_scored_with_its_own_sigmas(tmp_path):
    from posematch.keypoints import KeypointSpec

    sigmas = (0.05, 0.08, 0.08, 0.1)
    spec = KeypointSpec("quad", ("a", "b", "c", "d"), ((1, 2),), sigmas)
    gt_kpts = np.array([[20.0, 30.0, 2, 60.0, 30.0, 2, 20.0, 80.0, 2, 60.0, 80.0, 1]])
    area = 1600.0
    ann = {
        "images": [{"id": 7, "width": 100, "height": 100, "file_name": "7.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "keypoints": gt_kpts[0].tolist(),
             "num_keypoints": 4, "area": area, "bbox": [15, 25, 50, 60], "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "quad", "keypoints": list(spec.names), "skeleton": []}],
    }  # fmt: skip
    path = tmp_path / "quad.json"
    path.write_text(json.dumps(ann))
    # Move every joint so that its OKS term is exactly 0.82: exp(-d^2 / (2 area (2 sigma)^2)).
    d = np.sqrt(-2.0 * np.log(0.82) * area * (2 * np.array(sigmas)) ** 2)
    pred = gt_kpts.reshape(1, 4, 3)[..., :2].copy()
    pred[0, :, 0] += d
    ev = CocoKeypointEvaluator(str(path), str(tmp_path / "out"), spec=spec)
    ev.add([7], pred, np.ones((1, 4)), np.ones(1), [area])
    stats = ev.evaluate()
    # OKS 0.82 matches at the thresholds 0.50, 0.55, ..., 0.80 (7 of 10), each with precision 1.
    assert stats["AP"] == pytest.approx(0.7)
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no OKS sigmas"):
        CocoKeypointEvaluator(str(path), str(tmp_path / "out"), spec=KeypointSpec("x", ("a",), ()))


def test_paper_row_shows_pycocotools_minus_one_as_missing():
    from posematch.evaluation.report import paper_row

    stats = {"AP": 0.7456, "AP50": 0.9, "AP75": 0.8, "APM": 0.7, "APL": -1.0, "AR": 0.75}
    assert paper_row(stats) == (
        ["AP", "AP50", "AP75", "APM", "APL", "AR"],
        ["74.6", "90.0", "80.0", "70.0", "–", "75.0"],
    )


def _noisy_results(ann_file: str, seed: int) -> list[dict]:
    """Predictions from the ground truth: jittered joints (0-8 px), random scores, a false
    positive per image and a tenth of the people missed, so that every stat is non-trivial."""
    rng = np.random.default_rng(seed)
    data = json.loads(open(ann_file).read())
    results = []
    for ann in data["annotations"]:
        if ann.get("num_keypoints", 0) == 0 or rng.random() < 0.1:
            continue
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, :2] += rng.normal(0, rng.uniform(0, 8), size=(len(k), 2))
        k[:, 2] = rng.uniform(0.1, 1.0, len(k))
        results.append({"image_id": ann["image_id"], "category_id": 1,
                        "keypoints": k.ravel().tolist(), "score": float(rng.uniform(0.2, 1))})  # fmt: skip
    for image in data["images"]:
        k = np.column_stack([rng.uniform(0, image["width"], 17), rng.uniform(0, image["height"], 17),
                             rng.uniform(0.1, 1, 17)])  # fmt: skip
        results.append({"image_id": image["id"], "category_id": 1, "keypoints": k.ravel().tolist(),
                        "score": float(rng.uniform(0, 0.5))})  # fmt: skip
    return results


@pytest.mark.parametrize("source", ["coco_sample", "synthetic"])
def test_faster_coco_eval_backend_gives_the_stats_of_pycocotools(tmp_path, source):
    pytest.importorskip("faster_coco_eval")  # the fast extra (make install installs it)
    from posematch.evaluation.coco import coco_keypoint_stats, load_ground_truth

    if source == "coco_sample":
        ann = ANN
    else:
        from posematch.synthetic import generate

        generate(str(tmp_path / "s"), 2, 60, seed=3, workers=1)
        ann = str(tmp_path / "s" / "annotations" / "person_keypoints_val2017.json")
    gt = load_ground_truth(ann)
    results = _noisy_results(ann, seed=5)
    reference = coco_keypoint_stats(gt, results)
    fast = coco_keypoint_stats(gt, results, backend="faster_coco_eval")
    assert 0.05 < reference["AP"] < 0.95  # a score with something to get right
    assert fast.keys() == reference.keys()
    for name, value in reference.items():
        assert fast[name] == pytest.approx(value, abs=1e-12), name


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend='cocoapi'"):
        CocoKeypointEvaluator(ANN, "/tmp/unused", backend="cocoapi")
