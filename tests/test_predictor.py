"""posematch.Predictor: the same numbers as posematch-infer, batching that changes nothing, and
construction from a run folder or from a bare checkpoint plus config groups."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import posematch
from posematch.cli.infer import run as infer
from tests.cli.test_infer_cli import DET_FILE, IMAGE, SMALL, _cfg, _compose


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / ".hydra").mkdir()
    cfg = _compose("train", *SMALL, "run_dir=/x")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    torch.manual_seed(4)
    torch.save(instantiate(cfg.model).state_dict(), run / "best.pth")
    return run


def test_predictor_gives_the_numbers_of_posematch_infer(tmp_path, run_folder):
    dets = [d for d in json.loads(DET_FILE.read_text()) if d["image_id"] == 785]
    out = tmp_path / "infer"
    infer(_cfg(run_folder / "best.pth", IMAGE, out, f"boxes={DET_FILE}", "det_score_thr=0.0"))
    written = json.loads((out / "keypoints.json").read_text())
    people = posematch.Predictor.from_run(run_folder).predict(
        str(IMAGE), boxes=[d["bbox"] for d in dets], box_scores=[d["score"] for d in dets]
    )
    assert len(written) == len(people.keypoints) == len(dets) > 0
    flat = np.concatenate([people.keypoints, people.scores[..., None]], axis=2).reshape(
        len(dets), -1
    )
    np.testing.assert_allclose(np.array([r["keypoints"] for r in written]), flat, rtol=0, atol=1e-9)


def test_batching_images_changes_nothing(run_folder):
    predictor = posematch.Predictor.from_run(run_folder, batch_size=3)
    image = cv2.imread(str(IMAGE))
    small = cv2.resize(image, (320, 212))
    boxes = [[[10, 20, 200, 300], [100, 50, 150, 250]], None]
    together = predictor.predict_batch([image, small], boxes)
    alone = [predictor.predict(image, boxes[0]), predictor.predict(small)]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    assert together[1].boxes.tolist() == [[0.0, 0.0, 319.0, 211.0]]  # the whole image
    assert together[0].keypoints.shape == (2, 17, 2)


def test_from_checkpoint_equals_from_run(tmp_path, run_folder):
    bare = tmp_path / "weights.pth"
    shutil.copy(run_folder / "best.pth", bare)
    a = posematch.Predictor.from_checkpoint(bare, model="hrnet_small", overrides=SMALL[1:])
    b = posematch.Predictor.from_run(run_folder / "best.pth")
    image = cv2.imread(str(IMAGE))
    np.testing.assert_array_equal(a.predict(image).keypoints, b.predict(image).keypoints)


def test_bad_boxes_and_folders_are_named(tmp_path, run_folder):
    predictor = posematch.Predictor.from_run(run_folder)
    with pytest.raises(ValueError, match="boxes of image 0"):
        predictor.predict(str(IMAGE), boxes=[[0, 0, float("nan"), 10]])
    with pytest.raises(FileNotFoundError, match=r"no best\.pth or last\.pth"):
        posematch.Predictor.from_run(tmp_path)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"test": {"flip": False, "shift": True}, "trainer": {"flip_test": True}}, (False, True)),
        ({"trainer": {"flip_test": False, "shift_heatmap": False}}, (False, False)),  # old runs
        ({"trainer": {}}, (True, True)),  # neither says: the official flip test with its shift
    ],
)
def test_run_test_time_reads_the_test_group_then_the_old_trainer_keys(cfg, expected):
    from posematch.predictor import run_test_time

    assert run_test_time(OmegaConf.create(cfg)) == expected
