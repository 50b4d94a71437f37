"""Bad ground truth and bad predictions never reach COCOeval / PCKh as numbers (issue 11), and
instances skipped for unreadable images count as missed, never as someone else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posematch.evaluation.coco import CocoKeypointEvaluator
from posematch.evaluation.mpii import MpiiPCKhEvaluator
from posematch.types import Predictions
from tests.conftest import SHARED_DATA
from tests.evaluation.test_coco import ANN, NAMES, annotated
from tests.evaluation.test_mpii import write_gt, zero_based_gt


def gt_predictions() -> tuple[list[int], np.ndarray, list[float]]:
    anns = annotated()
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
    return [a["image_id"] for a in anns], kpts[..., :2], [a["area"] for a in anns]


@pytest.mark.parametrize("field", ["keypoints", "bbox", "area"])
def test_nan_in_ground_truth_is_refused_not_scored_100(tmp_path, field):
    # The fault: NaN keypoints in every val annotation gave AP 100.0 (a NaN OKS counts as a match).
    data = json.loads((SHARED_DATA / "coco_sample" / "test_coco.json").read_text())
    for ann in data["annotations"]:
        if field == "area":
            ann["area"] = float("nan")
        else:
            ann[field][0] = float("nan")
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    first = data["annotations"][0]["id"]
    with pytest.raises(ValueError, match=rf"val\.json: annotation id {first}: '{field}'"):
        CocoKeypointEvaluator(str(path), str(tmp_path / "out"))


def test_ground_truth_of_an_unknown_image_is_refused(tmp_path):
    data = json.loads((SHARED_DATA / "coco_sample" / "test_coco.json").read_text())
    data["annotations"][2]["image_id"] = 999
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="image_id 999 is not in 'images'"):
        CocoKeypointEvaluator(str(path), str(tmp_path / "out"))


def test_truncated_ground_truth_file_is_named(tmp_path):
    path = tmp_path / "val.json"
    path.write_text((SHARED_DATA / "coco_sample" / "test_coco.json").read_text()[:999])
    with pytest.raises(ValueError, match=r"ann_file=.*val\.json: not valid JSON"):
        CocoKeypointEvaluator(str(path), str(tmp_path / "out"))


def test_non_finite_areas_are_refused(tmp_path):
    ids, kpts, areas = gt_predictions()
    areas[4] = float("nan")
    ev = CocoKeypointEvaluator(ANN, str(tmp_path))
    with pytest.raises(ValueError, match="areas holds non-finite"):
        ev.add(ids, kpts, np.ones((12, 17)), np.ones(12), areas)


def test_invalid_rows_are_dropped_so_their_people_count_as_missed(tmp_path):
    ids, kpts, areas = gt_predictions()
    valid = np.ones(12, bool)
    valid[[2, 7]] = False
    poisoned = kpts.copy()
    poisoned[~valid] = np.nan  # what an unreadable image's blank crop might decode to: ignored
    ev = CocoKeypointEvaluator(ANN, str(tmp_path / "a"))
    # Through the evaluator's door for whole predictions, in two batches out of order.
    nan = np.full((12, 17), np.nan, np.float32)
    predictions = Predictions(
        index=np.arange(12), image_id=np.array(ids), keypoints=poisoned,
        keypoint_scores=np.ones((12, 17), np.float32), box_score=np.ones(12),
        area=np.array(areas), valid=valid, top_mass=nan, window_mass=nan,
    )  # fmt: skip
    ev.process(predictions.take(np.arange(6, 12)))
    ev.process(predictions.take(np.arange(6)))
    with_mask = ev.evaluate()
    keep = np.flatnonzero(valid)
    direct = CocoKeypointEvaluator(ANN, str(tmp_path / "b"))
    direct.add([ids[i] for i in keep], kpts[keep], np.ones((10, 17)), np.ones(10),
                   [areas[i] for i in keep])  # fmt: skip
    alone = direct.evaluate()
    assert [with_mask[n] for n in NAMES] == [alone[n] for n in NAMES]
    assert with_mask["AR"] == pytest.approx(10 / 12)  # the two people are missed, not matched


def test_mpii_invalid_rows_are_misses_and_nan_predictions_refused(tmp_path):
    gt = write_gt(tmp_path / "gt_valid.mat")
    preds = zero_based_gt()
    ev = MpiiPCKhEvaluator(gt)
    ev.add(np.arange(5), preds, valid=np.array([True, True, False, True, True]))
    masked = ev.evaluate()
    far = preds.copy()
    far[2] += 1e6  # the independent truth: a prediction far from every joint
    ev.reset()
    ev.add(np.arange(5), far)
    assert masked == ev.evaluate()
    assert masked["Mean"] < 100.0
    bad = preds.copy()
    bad[1, 3, 0] = np.nan
    ev.reset()
    with pytest.raises(ValueError, match="keypoints holds non-finite"):
        ev.add(np.arange(5), bad)


@pytest.mark.parametrize("section", ["annotations", "images"])
def test_repeated_ids_are_refused_where_the_file_is_read(tmp_path, section):
    # pycocotools indexes by id and keeps one record per id: perfect predictions of a file with a
    # repeated annotation id scored AP 0.910 instead of 1.000 (issue 15).
    from posematch.data.coco import load_coco
    from posematch.data.topdown import BadRecordError

    data = json.loads((SHARED_DATA / "coco_sample" / "test_coco.json").read_text())
    copy = dict(data[section][1])
    copy["id"] = data[section][0]["id"]
    data[section].append(copy)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    repeated = str(data[section][0]["id"])
    with pytest.raises(ValueError, match=f"{section} ids \\[{repeated}\\] occur more than once"):
        CocoKeypointEvaluator(str(path), output_dir=str(tmp_path))
    with pytest.raises(BadRecordError, match=f"{section} ids \\[{repeated}\\]"):
        load_coco(str(path))
