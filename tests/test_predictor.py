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


def test_heatmaps_on_request_are_the_models_output_on_the_crop(run_folder):
    # Issue 16 item 7. Independent path: the crop rebuilt with cv2 from the returned matrix
    # (crop -> image, inverted), the model run on it directly, no flip test.
    predictor = posematch.Predictor.from_run(run_folder, flip=False)
    image = cv2.imread(str(IMAGE))
    box = [[60.0, 40.0, 220.0, 330.0]]
    people = predictor.predict(image, boxes=box, heatmaps=True)
    assert people.heatmaps is not None and people.crop_to_image is not None
    w, h = predictor.codec.geometry.input_size
    assert people.heatmaps.shape == (1, 17, h // 4, w // 4)
    to_crop = cv2.invertAffineTransform(people.crop_to_image[0])
    crop = cv2.warpAffine(image, to_crop, (w, h), flags=cv2.INTER_LINEAR)
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)  # the configs feed the network RGB
    batch = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = predictor.model(batch).numpy()
    # Bilinear warps of one matrix may differ by a grey level at a pixel (OpenCV's fixed point).
    np.testing.assert_allclose(people.heatmaps, expected, rtol=0, atol=2e-3)
    # The keypoints are the ones decoded from these heatmaps, and the default returns none.
    plain = predictor.predict(image, boxes=box)
    np.testing.assert_array_equal(plain.keypoints, people.keypoints)
    assert plain.heatmaps is None and plain.crop_to_image is None


def test_draw_returns_a_drawn_copy(run_folder):
    predictor = posematch.Predictor.from_run(run_folder)
    image = cv2.imread(str(IMAGE))
    people = predictor.predict(image, boxes=[[60.0, 40.0, 220.0, 330.0]])
    drawn = predictor.draw(image, people, vis_thr=0.0)
    assert drawn.shape == image.shape and drawn is not image
    assert (drawn != image).any() and (image == cv2.imread(str(IMAGE))).all()
    x, y, bw, _ = (int(v) for v in people.boxes[0])
    assert (drawn[y, x : x + bw] != image[y, x : x + bw]).any()  # the box's top edge


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
        ({"test": {"flip": False, "shift": True}}, (False, True)),
        ({"test": {"flip": True, "shift": False}}, (True, False)),
        ({"trainer": {}}, (True, True)),  # no test group: the official flip test with its shift
    ],
)
def test_run_test_time_reads_the_test_group(cfg, expected):
    from posematch.predictor import run_test_time

    assert run_test_time(OmegaConf.create(cfg)) == expected


def test_run_test_time_refuses_the_old_trainer_keys():
    from posematch.predictor import run_test_time

    with pytest.raises(ValueError, match=r"trainer\.flip_test: a run config of an older posematch"):
        run_test_time(OmegaConf.create({"trainer": {"flip_test": False}}))
