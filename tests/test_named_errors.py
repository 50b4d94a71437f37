"""Errors that name their culprit (issue 15): each case once failed deep inside a library (a
pycocotools ufunc error, a KeyError, a reshape error) or named the wrong option; each now raises
before any work with the file, field or option in the message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from posematch.cli import common
from posematch.cli.person_boxes import BoxFile
from posematch.codecs.dots import DotCodec
from posematch.engine.settings import TrainerSettings
from posematch.engine.trainer import monitored_metric
from posematch.evaluation.coco import CocoKeypointEvaluator
from posematch.evaluation.dlc import DlcEvaluator
from posematch.evaluation.mpii import MpiiPCKhEvaluator
from tests.conftest import REPO, SHARED_DATA

COCO_JSON = SHARED_DATA / "coco_sample" / "test_coco.json"


def _write(tmp_path, mutate):
    data = json.loads(COCO_JSON.read_text())
    mutate(data)
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    return path


def _strings(data):
    ann = data["annotations"][0]
    ann["keypoints"] = [str(v) for v in ann["keypoints"]]


def _string_count(data):
    data["annotations"][1]["num_keypoints"] = "3"


def _short(data):
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_strings, r"annotation id \d+: 'keypoints' must be a list of numbers"),
        # A string count made the annotations COCOeval should ignore count as missed: perfect
        # predictions scored AP 0.851 on this file, exit 0.
        (_string_count, r"annotation id \d+: 'num_keypoints' must be an integer, got '3'"),
        (_short, r"annotation id \d+: 'keypoints' holds 48 numbers, expected 51"),
        (lambda d: d.pop("categories"), r"no 'categories' list"),
    ],
)
def test_ground_truth_fields_are_checked_when_the_file_is_read(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(ValueError, match=rf"ann_file=.*val\.json: {message}"):
        CocoKeypointEvaluator(str(path), str(tmp_path / "out"))


def test_the_unchanged_file_still_loads(tmp_path):
    CocoKeypointEvaluator(str(_write(tmp_path, lambda d: None)), str(tmp_path / "out"))


def test_an_empty_detection_file_names_det_file(tmp_path):
    from posematch.data.coco import CocoKeypoints
    from posematch.data.transforms import TopDownPipeline
    from posematch.keypoints import COCO

    det = tmp_path / "dets.json"
    det.write_text("[]")
    with pytest.raises(
        ValueError, match=r"data\.det_file=.*dets\.json: no usable person detection"
    ):
        CocoKeypoints(
            str(COCO_JSON), str(COCO_JSON.parent), TopDownPipeline((96, 128), spec=COCO), DotCodec(),
            boxes="det", det_file=str(det),
        )  # fmt: skip


def test_detections_all_under_the_score_threshold_name_it(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [1, 1, 9, 9], "score": 0.2}]))
    with pytest.raises(
        ValueError, match=r"scores below det_score_thr=0\.5 \(the highest scores 0\.2\)"
    ):
        BoxFile(path, 0.5)
    assert BoxFile(path, 0.1).by_id == {1: [([1.0, 1.0, 9.0, 9.0], 0.2)]}


def test_an_unknown_decoder_is_named_whatever_the_score():
    with pytest.raises(ValueError, match=r"decoder='foo': expected one of"):
        DotCodec(decoder="foo", score="mass")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, r"test\.batch_size=0: expected an integer >= 1"),
        ({"num_workers": -1}, r"test\.num_workers=-1"),
        ({"flip": "yes"}, r"test\.flip='yes': expected true or false"),
        ({"batch": 4}, r"test\.batch: not a test option"),
    ],
)
def test_test_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        common.TestTimeOptions.from_config(options)


def test_boxes_of_the_wrong_shape_are_named():
    from posematch.data.transforms import TopDownPipeline
    from posematch.keypoints import COCO
    from posematch.predictor import Predictor

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=hrnet_tiny", "data.input_size=[96,128]"])
    cfg.model.pretrained = None
    model = instantiate(cfg.model)
    codec = DotCodec((96, 128), (24, 32))
    predictor = Predictor(model, codec, TopDownPipeline((96, 128), spec=COCO, train=False))
    image = np.zeros((60, 80, 3), np.uint8)
    # The fault: a reshape error from numpy.
    with pytest.raises(ValueError, match=r"boxes of image 0: shape \(1, 3\); expected \(N, 4\)"):
        predictor.predict(image, boxes=[[10, 10, 50]])
    assert len(predictor.predict(image, boxes=[[10, 10, 50, 40]]).keypoints) == 1


class _Val:
    def __init__(self, evaluator):
        self.evaluator = evaluator


def test_the_monitor_follows_the_evaluator_and_an_unknown_one_is_refused(tmp_path):
    coco = CocoKeypointEvaluator(str(COCO_JSON), str(tmp_path))
    mpii = MpiiPCKhEvaluator.__new__(MpiiPCKhEvaluator)
    mpii.low_threshold = 0.1
    assert monitored_metric(None, _Val(coco)) == "AP"
    assert monitored_metric(None, _Val(mpii)) == "Mean"
    assert monitored_metric("AR", _Val(coco)) == "AR"
    # The fault: data=mpii with the old default monitor AP never wrote best.pth, silently.
    with pytest.raises(ValueError, match=r"trainer\.monitor=AP: MpiiPCKhEvaluator reports Mean"):
        monitored_metric("AP", _Val(mpii))
    with pytest.raises(ValueError, match=r"trainer\.monitor=APX: CocoKeypointEvaluator reports AP"):
        monitored_metric("APX", _Val(coco))
    assert "RMSE" not in DlcEvaluator.metric_names.fget(_dlc_like())


def _dlc_like():
    ev = DlcEvaluator.__new__(DlcEvaluator)
    ev.pck_thr, ev.sigmas = 0.2, (0.05,)
    return ev


def test_trainer_booleans_are_checked():
    with pytest.raises(ValueError, match=r"trainer\.sync_bn='maybe': expected true or false"):
        TrainerSettings(sync_bn="maybe")


@pytest.mark.parametrize("value", ["false", "yes", 1])
def test_boolean_options_take_only_true_or_false(value):
    from posematch.codecs.geometry import HeatmapGeometry

    # The fault class: bool("false") is True, so a flag given as a string read as on.
    with pytest.raises(ValueError, match=r"resume_force=.*: expected true or false"):
        common.flag({"resume_force": value}, "resume_force")
    with pytest.raises(ValueError, match=r"udp=.*: expected true or false"):
        HeatmapGeometry((192, 256), (48, 64), udp=value)
    assert common.flag({}, "validate", True) is True


def test_a_skeleton_link_of_three_joints_is_named():
    from posematch.keypoints import spec

    with pytest.raises(ValueError, match=r"bad skeleton link \(0, 1, 2\)"):
        spec(name="x", names=["a", "b", "c"], skeleton=[[0, 1, 2]])


def test_a_saved_config_that_is_not_a_mapping_is_named(tmp_path):
    from posematch.predictor import saved_config

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"config\.yaml: not a saved config \(a YAML mapping\)"):
        saved_config(tmp_path)


def test_the_dot_codec_takes_numpy_flags_with_torch_keypoints():
    codec = DotCodec((8, 8), (2, 2))
    targets = codec.encode(torch.tensor([[1.0, 2.0], [5.0, 6.0]]), np.array([1, 0]))
    assert targets.weights.tolist() == [1.0, 0.0]
    assert targets.keypoints.tolist() == [[0.25, 0.5], [1.25, 1.5]]
