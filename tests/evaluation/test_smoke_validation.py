"""trainer.max_val_instances (issue 16 item 7): a smoke run validates on the first instances of the
val split, completed to whole images, and each evaluator scores exactly those: checked against
pycocotools on a file holding only those images, and against perfect predictions (MPII, DLC)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from posematch.data.topdown import InstanceSubset, first_instances
from posematch.evaluation.coco import CocoKeypointEvaluator
from posematch.evaluation.dlc import DlcEvaluator
from posematch.evaluation.mpii import MpiiPCKhEvaluator
from tests.cli.test_train_resume_cli import _command, _env
from tests.conftest import SHARED_DATA
from tests.engine.tiny import synthetic_set, synthetic_val_set
from tests.evaluation.test_dlc import SPEC, evaluator, predictions
from tests.evaluation.test_dlc import project as project
from tests.evaluation.test_mpii import write_gt, zero_based_gt

ANN = SHARED_DATA / "coco_sample" / "test_coco.json"


def _coco_gt_results(coco: dict, image_ids: set[int]) -> list[dict]:
    """The ground truth of these images as results, each person slightly off (AP below 1)."""
    out = []
    for i, ann in enumerate(coco["annotations"]):
        if ann["image_id"] in image_ids and ann["num_keypoints"] > 0:
            kpts = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            kpts[:, :2] += 3.0 * (i % 3)
            kpts[:, 2] = 1.0
            out.append({"image_id": ann["image_id"], "category_id": 1,
                        "keypoints": kpts.flatten().tolist(), "score": 1.0 - 0.05 * i})  # fmt: skip
    return out


def test_coco_restricted_scores_equal_cocoeval_on_a_file_of_those_images_only(tmp_path):
    from posematch.evaluation.coco import coco_keypoint_stats, load_ground_truth

    coco = json.loads(ANN.read_text())
    chosen = {785, 40083}
    results = _coco_gt_results(coco, chosen)
    # Independent: a COCO file holding only the chosen images and their annotations.
    small = {
        **coco,
        "images": [im for im in coco["images"] if im["id"] in chosen],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in chosen],
    }
    (tmp_path / "small.json").write_text(json.dumps(small))
    expected = coco_keypoint_stats(load_ground_truth(str(tmp_path / "small.json"), 17), results)
    whole = coco_keypoint_stats(load_ground_truth(str(ANN), 17), results)
    restricted = coco_keypoint_stats(
        load_ground_truth(str(ANN), 17), results, image_ids=sorted(chosen)
    )
    assert restricted == expected
    assert whole["AR"] < expected["AR"]  # the other images' people count as missed otherwise

    ev = CocoKeypointEvaluator(str(ANN), str(tmp_path), nms_thr=None)
    ev.restrict([0, 1, 2, 3], sorted(chosen))
    ids = np.array([r["image_id"] for r in results])
    kpts = np.array([r["keypoints"] for r in results]).reshape(len(results), 17, 3)
    ev.add(ids, kpts[..., :2], kpts[..., 2], [r["score"] for r in results], np.ones(len(ids)))
    got = ev.evaluate()
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-12)


def test_mpii_restricted_to_instances_scores_those_only(tmp_path):
    ev = MpiiPCKhEvaluator(write_gt(tmp_path / "gt_valid.mat"))
    preds = zero_based_gt()
    ev.restrict([1, 3], [])
    bad = preds.copy()
    bad[[0, 2, 4]] += 500.0  # far off: outside the subset, so never scored
    ev.add([0, 1], bad[[1, 3]])  # the subset's instances arrive re-indexed 0 .. n - 1
    table = ev.evaluate()
    assert table["Mean"] == 100.0
    ev = MpiiPCKhEvaluator(write_gt(tmp_path / "gt_valid.mat"))
    ev.restrict([1, 3], [])
    ev.add([0, 1], bad[[0, 2]])  # other instances' predictions in the subset's places: wrong
    assert ev.evaluate()["Mean"] < 10.0


def test_dlc_restricted_to_frames_scores_those_only(project):
    ev = evaluator(project)
    ev.restrict([0, 1], [0, 2])
    pred, scores = predictions((0, 0))
    pred[1] += 50.0  # frame 1 is not in the subset
    ev.add([0, 2], pred[[0, 2]], scores[[0, 2]])
    m = ev.evaluate()
    assert m["RMSE"] == 0.0 and m["PCK"] == 100.0
    assert SPEC.sigmas and m["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="missing"):
        full = DlcEvaluator(project, split="train", train_fraction=1.0, spec=SPEC)
        full.add([0, 2], pred[[0, 2]], scores[[0, 2]])
        full.evaluate()


def test_first_instances_take_whole_images_and_the_subset_reindexes(tmp_path):
    synthetic_set(tmp_path / "synthetic")
    val, _ = synthetic_val_set(tmp_path / "synthetic")
    ids = [int(inst.image_id) for inst in val.instances]
    indices, image_ids = first_instances(val, 1)
    assert image_ids == [ids[0]]
    assert indices == [i for i, x in enumerate(ids) if x == ids[0]]  # every person of the image
    assert len(indices) >= 2  # the first instance alone would cut its image
    subset = InstanceSubset(val, indices)
    assert len(subset) == len(indices)
    assert [subset[i].index for i in range(len(subset))] == list(range(len(indices)))
    assert subset[0].image_id == val[indices[0]].image_id


def test_a_smoke_run_validates_on_the_subset_and_records_it(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=16)
    cmd = [x for x in _command(tmp_path / "run", data) if x != "validate=false"]
    cmd = [x.replace("trainer.epochs=4", "trainer.epochs=1") for x in cmd]
    done = subprocess.run(
        [*cmd, "trainer.max_val_instances=3"], env=_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trainer.max_val_instances=3: validating on" in done.stderr + done.stdout
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val/AP" in records[-1]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["budget"]["max_val_instances"] == 3  # tables never pair it with a full validation
