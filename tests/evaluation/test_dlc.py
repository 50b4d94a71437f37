"""DlcEvaluator (issue 12): DeepLabCut's pixel error, PCK and OKS-AP of hand-made predictions with
known errors, on a hand-written project whose boxes are known, and on the real openfield split."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from posematch.codecs.dots import DotCodec
from posematch.data.dlc import DlcKeypoints
from posematch.data.transforms import TopDownPipeline
from posematch.evaluation.dlc import DlcEvaluator
from posematch.keypoints import spec
from posematch.types import Predictions
from tests.conftest import SHARED_DATA
from tests.dlc_files import PARTS, write_project

# Three frames, four parts:
# f0: a box 100 x 50 (longest side 100); f1: 20 x 10 (longest 20), tailbase unlabelled;
# f2: one labelled point (a box without extent: left out of PCK).
CSV = """\
scorer,Me,Me,Me,Me,Me,Me,Me,Me
bodyparts,snout,snout,leftear,leftear,rightear,rightear,tailbase,tailbase
coords,x,y,x,y,x,y,x,y
labeled-data/v1/f0.png,0,0,100,0,0,50,100,50
labeled-data/v1/f1.png,10,10,30,10,10,20,,
labeled-data/v1/f2.png,50,50,,,,,,
"""
GT = np.array(
    [
        [[0, 0], [100, 0], [0, 50], [100, 50]],
        [[10, 10], [30, 10], [10, 20], [np.nan, np.nan]],
        [[50, 50], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan]],
    ]
)
LABELLED = ~np.isnan(GT).any(axis=2)  # 4 + 3 + 1 = 8 parts
SPEC = spec("test", names=list(PARTS), flip_pairs=[[1, 2]], sigmas=[0.05] * 4)


@pytest.fixture
def project(tmp_path):
    write_project(tmp_path / "p", CSV, pcutoff=0.4, size=(128, 64))
    return str(tmp_path / "p")


def evaluator(project, **kw) -> DlcEvaluator:
    kw.setdefault("spec", SPEC)
    return DlcEvaluator(project, split="train", train_fraction=1.0, **kw)  # all three frames


def predictions(offset, scores=1.0) -> tuple[np.ndarray, np.ndarray]:
    pred = np.where(LABELLED[..., None], GT, 1e6) + np.asarray(offset, dtype=np.float64)
    return pred, np.broadcast_to(np.asarray(scores, dtype=np.float64), GT.shape[:2]).copy()


def test_perfect_predictions_score_rmse_0_pck_100_ap_1(project):
    ev = evaluator(project)
    ev.add([0, 1, 2], *predictions((0, 0)))
    m = ev.evaluate()
    assert m["scored"] is True
    assert m["RMSE"] == 0.0 and m["RMSE_pcutoff"] == 0.0
    assert m["PCK"] == m["PCK@0.2"] == m["PCK@0.05"] == 100.0
    assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)


def test_an_offset_of_3_4_is_an_rmse_of_5_and_pck_by_hand(project):
    ev = evaluator(project)
    ev.add([2, 0, 1], *(a[[2, 0, 1]] for a in predictions((3, 4))))  # any order
    m = ev.evaluate()
    assert m["RMSE"] == pytest.approx(5.0, abs=1e-12)
    # PCK@0.2: f0's 4 parts (5 < 0.2 x 100) right, f1's 3 (5 >= 0.2 x 20 = 4) wrong, f2 left out.
    assert m["PCK"] == m["PCK@0.2"] == pytest.approx(100 * 4 / 7)
    # PCK@0.05: f0's threshold is exactly 5: strict <, so nothing is right.
    assert m["PCK@0.05"] == 0.0
    assert 0.0 < m["AP"] < 1.0


def test_rmse_is_the_mean_distance_not_a_root_mean_square(project):
    pred, scores = predictions((0, 0))
    pred[0, 0] += (3, 4)  # 5 px
    pred[0, 1] += (6, 8)  # 10 px; the 6 other labelled parts exact
    ev = evaluator(project)
    ev.add([0, 1, 2], pred, scores)
    assert ev.evaluate()["RMSE"] == pytest.approx(15 / 8)  # not sqrt(125 / 8) = 3.95


def test_rmse_pcutoff_keeps_the_parts_scored_at_least_pcutoff(project):
    pred, scores = predictions((0, 0))
    pred[0] += (3, 4)  # f0: 5 px each, score 0.9
    pred[1:] += (6, 8)  # f1, f2: 10 px each, score 0.1
    scores[0], scores[1:] = 0.9, 0.1
    scores[0, 0] = 0.4  # exactly the project's pcutoff 0.4: kept (>=)
    ev = evaluator(project)
    assert ev.pcutoff == 0.4  # from config.yaml
    ev.add([0, 1, 2], pred, scores)
    m = ev.evaluate()
    assert m["RMSE"] == pytest.approx((4 * 5 + 4 * 10) / 8)
    assert m["RMSE_pcutoff"] == pytest.approx(5.0)
    low = evaluator(project, pcutoff=0.05)
    low.add([0, 1, 2], pred, scores)
    assert low.evaluate()["RMSE_pcutoff"] == pytest.approx(60 / 8)
    none = evaluator(project, pcutoff=0.95)
    none.add([0, 1, 2], pred, scores)
    assert np.isnan(none.evaluate()["RMSE_pcutoff"])  # no part passes: NaN, as np.nanmean


def test_an_unreadable_frame_is_left_out_of_rmse_and_wrong_in_pck(project):
    ev = evaluator(project)
    pred, scores = predictions((3, 4))
    pred[0] = np.nan  # whatever an invalid row holds is never read
    ev.add([0, 1, 2], pred, scores, valid=[False, True, True])
    m = ev.evaluate()
    assert m["RMSE"] == pytest.approx(5.0)  # f1's 3 and f2's 1 part
    assert m["PCK@0.2"] == 0.0  # f0 (4 parts) has no prediction, f1's 3 are too far
    assert m["AR"] < 1.0


def test_without_sigmas_there_is_no_ap(project):
    ev = evaluator(project, spec=None)
    ev.add([0, 1, 2], *predictions((0, 0)))
    m = ev.evaluate()
    assert "AP" not in m and m["RMSE"] == 0.0


def test_every_frame_of_the_split_exactly_once(project):
    pred, scores = predictions((0, 0))
    for ids, words in (
        ([0, 1], "1 missing"),
        ([0, 1, 7], "1 not in the split"),
        ([0, 1, 1], "1 given twice"),
    ):
        ev = evaluator(project)
        rows = np.array([min(i, 2) for i in ids])
        ev.add(ids, pred[rows], scores[rows])
        with pytest.raises(ValueError, match=words):
            ev.evaluate()


def test_predictions_are_written_in_deeplabcuts_csv_layout(project, tmp_path):
    ev = evaluator(project, output_dir=str(tmp_path / "out"))
    pred, scores = predictions((0.25, 0.5), 0.75)
    ev.add([0, 1, 2], pred, scores, valid=[True, True, False])
    ev.evaluate()
    with open(tmp_path / "out" / "dlc_predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["scorer"] + ["posematch"] * 12
    assert rows[1] == ["bodyparts"] + [p for p in PARTS for _ in range(3)]
    assert rows[2] == ["coords"] + ["x", "y", "likelihood"] * 4
    assert [r[0] for r in rows[3:]] == [f"labeled-data/v1/f{i}.png" for i in range(3)]
    assert [float(v) for v in rows[3][1:4]] == [0.25, 0.5, 0.75]
    assert [float(v) for v in rows[4][4:7]] == [30.25, 10.5, 0.75]
    assert rows[5][1:] == [""] * 12  # the frame without a prediction


def test_the_evaluator_sees_the_frames_and_labels_of_the_datasets_split(project):
    for kw in ({"train_fraction": 0.5, "split_seed": 3}, {"num_folds": 3, "fold": 1}):
        pipeline = TopDownPipeline((64, 64), SPEC)
        ds = DlcKeypoints(project, "test", pipeline, DotCodec((64, 64), (16, 16)), SPEC, **kw)
        ev = DlcEvaluator(project, "test", spec=SPEC, **kw)
        assert [i.image_id for i in ds.instances] == ev.frame_ids.tolist()
        for inst, gt in zip(ds.instances, ev.gt, strict=True):
            np.testing.assert_array_equal(inst.keypoints, np.nan_to_num(gt))


def test_the_openfield_test_split_scores_its_own_labels_perfectly_through_process():
    root = str(SHARED_DATA / "dlc_openfield")
    pipeline = TopDownPipeline((192, 192), SPEC)
    ds = DlcKeypoints(root, "test", pipeline, DotCodec((192, 192), (48, 48)), SPEC)
    n = len(ds)
    ev = DlcEvaluator(root, "test", spec=SPEC)
    ev.process(
        Predictions(
            index=np.arange(n),
            image_id=np.array([i.image_id for i in ds.instances]),
            keypoints=np.stack([i.keypoints for i in ds.instances]) + np.array([3.0, 4.0]),
            keypoint_scores=np.ones((n, 4), np.float32),
            box_score=np.ones(n),
            area=np.array([i.area for i in ds.instances]),
            valid=np.ones(n, bool),
            top_mass=np.zeros((n, 4), np.float32),
            window_mass=np.zeros((n, 4), np.float32),
        )
    )
    m = ev.evaluate()
    assert n == 6 and m["RMSE"] == pytest.approx(5.0) and m["RMSE_pcutoff"] == pytest.approx(5.0)
    assert m["PCK@0.2"] == 100.0  # every mouse box is longer than 25 px


def test_posematch_evals_row_prints_the_dlc_metrics():
    from posematch.evaluation.report import markdown_row

    row = {"RMSE": 4.26, "RMSE_pcutoff": float("nan"), "PCK": 87.5, "PCK@0.2": 87.5, "scored": True}
    assert markdown_row(row).splitlines() == [
        "| RMSE | RMSE_pcutoff | PCK | AP |",
        "|---:|---:|---:|---:|",
        "| 4.3 | – | 87.5 | – |",
    ]
    assert markdown_row({**row, "AP": 0.5})[-7:] == " 50.0 |"
