"""MPII PCKh on the real 5-person sample, with a gt_valid.mat written here in the official layout.

No real gt_valid.mat exists for these records (see ../shared/data/README.md), so the head boxes are
chosen: person n has corners (x, y) and (x + 30 f, y + 40 f), a diagonal of 50 f px and a head
size of 0.6 * 50 f = 30 f px (f = 1, 2, 1.5, 0.8, 1.2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from posematch.evaluation.mpii import MpiiPCKhEvaluator, pckh_columns
from tests.conftest import SHARED_DATA

ANN = SHARED_DATA / "mpii_sample" / "test_mpii.json"
# The official abbreviations, in the order of annot/*.json.
OFFICIAL_NAMES = [
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
]  # fmt: skip
FACTORS = np.array([1.0, 2.0, 1.5, 0.8, 1.2])
HEAD_SIZES = 30.0 * FACTORS
R_ANK, L_ANK, PELVIS, HEAD, R_WRI, L_SHO, L_ELB = 0, 5, 6, 9, 10, 13, 14


def sample() -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 2) joints in the json's MATLAB 1-based pixels, (N, 16) visibility."""
    records = json.loads(ANN.read_text())
    return (
        np.array([r["joints"] for r in records], dtype=np.float64),
        np.array([r["joints_vis"] for r in records]),
    )


def write_gt(path, names=OFFICIAL_NAMES, drop: str | None = None) -> str:
    joints, vis = sample()
    corner0 = joints[:, HEAD] - 20.0
    corner1 = corner0 + np.stack([30.0 * FACTORS, 40.0 * FACTORS], 1)
    mdict = {
        "dataset_joints": np.array(names, dtype=object).reshape(1, 16),  # a 1x16 cell
        "jnt_missing": (1 - vis).T.astype(np.uint8),  # (16, N)
        "pos_gt_src": np.transpose(joints, (1, 2, 0)),  # (16, 2, N)
        "headboxes_src": np.transpose(np.stack([corner0, corner1], 1), (1, 2, 0)),  # (2, 2, N)
    }
    if drop:
        del mdict[drop]
    savemat(str(path), mdict)
    return str(path)


def zero_based_gt() -> np.ndarray:
    """The predictions a perfect model gives: 0-based pixels, as posematch.data.mpii loads them."""
    return sample()[0] - 1.0


def test_written_mat_has_the_official_layout(tmp_path):
    mat = loadmat(write_gt(tmp_path / "gt_valid.mat"))
    assert mat["jnt_missing"].shape == (16, 5)
    assert mat["pos_gt_src"].shape == (16, 2, 5)
    assert mat["headboxes_src"].shape == (2, 2, 5)
    # The official look-up works on it.
    assert np.where(mat["dataset_joints"] == "head")[1][0] == HEAD
    diag = np.linalg.norm(mat["headboxes_src"][1] - mat["headboxes_src"][0], axis=0)
    np.testing.assert_allclose(0.6 * diag, HEAD_SIZES, rtol=1e-15)


def test_ground_truth_scores_100_and_pred_mat_is_one_based(tmp_path):
    ev = MpiiPCKhEvaluator(write_gt(tmp_path / "gt_valid.mat"), str(tmp_path / "out"))
    preds = zero_based_gt()
    ev.add([3, 4], preds[[3, 4]])  # batches out of order, as gathered from ranks
    ev.add(np.array([0, 1, 2]), preds[:3])
    table = ev.evaluate()
    assert table["scored"] is True
    for col in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"):
        assert table[col] == 100.0, col
    assert table["PCKh/r_ankle"] == 100.0
    written = loadmat(str(tmp_path / "out" / "pred.mat"))["preds"]
    assert written.shape == (5, 16, 2)
    np.testing.assert_allclose(written, sample()[0], atol=1e-9)  # 1-based again, in index order


def test_perturbations_flip_exactly_the_expected_joints(tmp_path):
    preds = zero_based_gt()
    moves = [  # (person, joint, head sizes, axis)
        (0, R_WRI, -0.5, 0),  # exactly 0.5 (if the +1 is applied): correct, wrong at 0.1
        (1, HEAD, 0.51, 1),  # wrong
        (2, R_ANK, 10.0, 0),  # not annotated for person 2: ignored
        (3, L_SHO, 0.49, 1),  # correct, wrong at 0.1
        (4, PELVIS, 5.0, 0),  # wrong, but pelvis is outside the Mean
        (4, L_ELB, 0.09, 0),  # correct at both thresholds
    ]
    for person, joint, k, axis in moves:
        preds[person, joint, axis] += k * HEAD_SIZES[person]
    assert sample()[0][0, R_WRI].tolist() == [869.0, 214.0]  # integers: 15 px / 30 px is exact
    ev = MpiiPCKhEvaluator(write_gt(tmp_path / "gt_valid.mat"), None)
    ev.add(np.arange(5), preds)
    table = ev.evaluate()
    assert table["PCKh/head_top"] == 80.0
    assert table["PCKh/pelvis"] == 80.0
    assert table["PCKh/r_wrist"] == 100.0
    assert table["PCKh/r_ankle"] == 100.0  # 3 annotated, all correct
    others = set(range(16)) - {HEAD, PELVIS}
    names = ["r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
             "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
             "l_elbow", "l_wrist"]  # fmt: skip
    assert all(table[f"PCKh/{names[j]}"] == 100.0 for j in others)
    assert table["Head"] == 80.0 and table["Shoulder"] == 100.0 and table["Wrist"] == 100.0
    # 14 joints x 5 people - 4 unannotated ankles = 66 visible; 1 wrong at 0.5, 3 wrong at 0.1.
    assert table["Mean"] == pytest.approx(100.0 * 65 / 66, abs=1e-12)
    assert table["Mean@0.1"] == pytest.approx(100.0 * 63 / 66, abs=1e-12)
    # Threshold 0.11 (the official "Mean@0.1" column) names itself.
    ev11 = MpiiPCKhEvaluator(write_gt(tmp_path / "gt_valid.mat"), low_threshold=0.11)
    ev11.add(np.arange(5), preds)
    assert ev11.evaluate()["Mean@0.11"] == pytest.approx(100.0 * 63 / 66, abs=1e-12)


def test_column_arithmetic_hand_worked():
    correct = np.array([5, 6, 7, 8, 9, 10, 0, 0, 10, 9, 4, 5, 10, 8, 7, 6])
    visible = np.array([10, 10, 10, 10, 10, 20, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    t = pckh_columns(correct, visible)
    # per joint: r_ank 50, r_kne 60, r_hip 70, l_hip 80, l_kne 90, l_ank 50, head 90, r_wri 40,
    # r_elb 50, r_sho 100, l_sho 80, l_elb 70, l_wri 60
    assert t["Head"] == pytest.approx(90.0)
    assert t["Shoulder"] == pytest.approx(90.0)
    assert t["Elbow"] == pytest.approx(60.0)
    assert t["Wrist"] == pytest.approx(50.0)
    assert t["Hip"] == pytest.approx(75.0)
    assert t["Knee"] == pytest.approx(75.0)
    assert t["Ankle"] == pytest.approx(50.0)
    # Weighted by visible counts, pelvis and thorax out: 104 correct of 150 visible.
    assert t["Mean"] == pytest.approx(100.0 * 104 / 150, abs=1e-12)


def test_test_split_writes_pred_mat_only(tmp_path):
    ev = MpiiPCKhEvaluator(None, str(tmp_path / "out"))
    ev.add(np.arange(5), zero_based_gt())
    assert ev.evaluate() == {"scored": False}
    np.testing.assert_allclose(loadmat(str(tmp_path / "out" / "pred.mat"))["preds"], sample()[0])


def test_bad_inputs_name_the_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="headboxes_src"):
        MpiiPCKhEvaluator(write_gt(tmp_path / "a.mat", drop="headboxes_src"))
    swapped = OFFICIAL_NAMES.copy()
    swapped[0], swapped[5] = swapped[5], swapped[0]
    with pytest.raises(ValueError, match="dataset_joints"):
        MpiiPCKhEvaluator(write_gt(tmp_path / "b.mat", names=swapped))
    with pytest.raises(FileNotFoundError, match="gt_file"):
        MpiiPCKhEvaluator(str(tmp_path / "missing.mat"))
    ev = MpiiPCKhEvaluator(write_gt(tmp_path / "c.mat"))
    ev.add([0, 1, 2, 3, 3], np.zeros((5, 16, 2)))
    with pytest.raises(ValueError, match="1 given twice or more, 1 missing"):
        ev.evaluate()
    with pytest.raises(ValueError, match="keypoints has shape"):
        ev.add([0], np.zeros((1, 17, 2)))


def test_a_json_in_another_order_than_gt_valid_is_refused(tmp_path):
    gt = write_gt(tmp_path / "gt_valid.mat")
    MpiiPCKhEvaluator(gt, str(tmp_path / "out"), ann_file=str(ANN))  # the same order: accepted
    records = json.loads(ANN.read_text())
    shuffled = tmp_path / "valid.json"
    shuffled.write_text(json.dumps(records[::-1]))
    # The fault: the same count in another order scored perfect predictions Mean PCKh 0.0.
    with pytest.raises(ValueError, match=r"valid\.json: 4 of 5 records do not match gt_valid\.mat"):
        MpiiPCKhEvaluator(gt, str(tmp_path / "out"), ann_file=str(shuffled))
    shuffled.write_text(json.dumps(records[:4]))
    with pytest.raises(ValueError, match=r"4 records, but gt_valid\.mat holds 5 instances"):
        MpiiPCKhEvaluator(gt, str(tmp_path / "out"), ann_file=str(shuffled))
