"""posematch-infer: the installed entry point on real sample images, detection boxes, folders, video,
error messages, and the skeleton drawing."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pycocotools.coco import COCO

from posematch.build import build_run
from posematch.cli.infer import run
from posematch.cli.person_boxes import find_detector_weights, torchvision_weight_files
from posematch.draw import CENTRE, LEFT, draw_pose, line_thickness
from posematch.inference import predict_loader
from posematch.keypoints import COCO as COCO_SPEC
from posematch.types import Batch
from tests.conftest import REPO, SHARED_DATA

COCO_DIR = SHARED_DATA / "coco_sample"
IMAGE = COCO_DIR / "000000000785.jpg"  # image id 785 in test_coco.json
DET_FILE = COCO_DIR / "test_coco_det_AP_H_56.json"
SMALL = ["model=hrnet_small", "data.input_size=[96,128]", "data.heatmap_size=[24,32]"]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _cfg(checkpoint: Path, input_: Path, out: Path, *overrides: str):
    return _compose(
        "infer",
        *SMALL,
        f"checkpoint={checkpoint}",
        f"input={input_}",
        f"output_dir={out}",
        "detector=none",
        *overrides,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised small HRNet, saved as a plain state dict."""
    cfg = _compose("infer", *SMALL, "checkpoint=x", "input=x", "output_dir=x")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save(instantiate(cfg.model).state_dict(), path)
    return path


def _results(out: Path) -> list[dict]:
    return json.loads((out / "keypoints.json").read_text())


def test_entry_point_on_one_image_of_a_training_run(tmp_path, checkpoint):
    # A posematch-train run directory: the model comes from its saved config, so no model override
    # is passed (the default hrnet_w32 would not load this small checkpoint).
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    train_cfg = _compose("train", *SMALL)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(train_cfg))
    shutil.copy(checkpoint, run_dir / "best.pth")
    out = tmp_path / "infer"
    exe = shutil.which("posematch-infer") or str(REPO / ".venv" / "bin" / "posematch-infer")
    cmd = [exe, f"checkpoint={run_dir / 'best.pth'}", f"input={IMAGE}", "detector=none",
           f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 image, 1 person" in proc.stdout and str(out / "keypoints.json") in proc.stdout

    vis = out / "vis" / "000000000785.jpg"
    assert vis.stat().st_size > 0
    original = cv2.imread(str(IMAGE))
    drawn = cv2.imread(str(vis))
    assert drawn is not None and drawn.shape == original.shape

    results = _results(out)
    assert len(results) == 1
    res = results[0]
    assert res["image_id"] == 785 and res["category_id"] == 1
    assert len(res["keypoints"]) == 3 * 17 and all(isinstance(v, float) for v in res["keypoints"])
    kpts = np.array(res["keypoints"]).reshape(17, 3)
    # Whole image box (score 1) -> official rescoring: mean of the keypoint scores above 0.2.
    passed = kpts[:, 2][kpts[:, 2] > 0.2]
    assert res["score"] == pytest.approx(passed.mean() if passed.size else 0.0, rel=1e-9)
    # The crop covers the image (padded to the input aspect ratio): keypoints stay inside it.
    h, w = original.shape[:2]
    half = 1.25 * np.array([max(w - 1, 0.75 * (h - 1)), max(h - 1, (w - 1) / 0.75)]) / 2
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    assert (np.abs(kpts[:, :2] - centre) <= half + 1e-6).all()
    # The COCO results format, as pycocotools reads it against the sample annotations.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_DIR / "test_coco.json"))
        dt = gt.loadRes(results)
    anns = dt.loadAnns(dt.getAnnIds(imgIds=[785]))
    assert len(anns) == 1 and anns[0]["area"] > 0


def test_detection_boxes_give_one_result_per_person_box(tmp_path, checkpoint):
    thr = 0.5
    out = tmp_path / "out"
    cfg = _cfg(checkpoint, COCO_DIR, out, f"boxes={DET_FILE}", f"det_score_thr={thr}")
    summary = run(cfg)
    dets = json.loads(DET_FILE.read_text())
    expected = Counter(d["image_id"] for d in dets if d["category_id"] == 1 and d["score"] >= thr)
    results = _results(out)
    assert Counter(r["image_id"] for r in results) == expected
    assert summary["images"] == 4 and summary["people"] == sum(expected.values())
    assert sorted(p.name for p in (out / "vis").iterdir()) == sorted(
        p.name for p in COCO_DIR.glob("*.jpg")
    )

    # Same boxes through the evaluation dataset (CocoKeypoints, detection boxes): same keypoints.
    dataset = instantiate(
        cfg.data.val,
        ann_file=str(COCO_DIR / "test_coco.json"),
        image_dir=str(COCO_DIR),
        boxes="det",
        det_file=str(DET_FILE),
        det_score_thr=thr,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=Batch.collate)
    perm = COCO_SPEC.flip_permutation()
    model = build_run(cfg, checkpoint).model
    (pred,) = list(predict_loader(model, loader, instantiate(cfg.codec), flip_perm=perm))
    for image_id in expected:
        ours = np.array([r["keypoints"] for r in results if r["image_id"] == image_id])
        ours = ours.reshape(len(ours), 17, 3)
        mine = pred.image_id == image_id
        np.testing.assert_allclose(ours[..., :2], pred.keypoints[mine], atol=1e-3)
        np.testing.assert_allclose(ours[..., 2], pred.keypoint_scores[mine], atol=1e-5)


def test_folder_with_named_images_and_file_name_boxes(tmp_path, checkpoint):
    folder = tmp_path / "images"
    folder.mkdir()
    image = cv2.resize(cv2.imread(str(IMAGE)), (320, 212))
    cv2.imwrite(str(folder / "b.png"), image)
    cv2.imwrite(str(folder / "a.jpg"), image)
    (folder / "notes.txt").write_text("not an image")
    boxes = tmp_path / "dets.json"
    dets = [
        {"file_name": "b.png", "category_id": 1, "bbox": [100, 20, 80, 180], "score": 0.9},
        {"file_name": "b.png", "category_id": 2, "bbox": [10, 20, 80, 180], "score": 0.9},
        {"image_id": 0, "category_id": 1, "bbox": [10, 20, 80, 180], "score": 0.9},  # no number
    ]
    boxes.write_text(json.dumps(dets))
    out = tmp_path / "out"
    run(_cfg(checkpoint, folder, out, f"boxes={boxes}"))
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["a.jpg", "b.jpg"]
    assert [(r["image_id"], r["file_name"]) for r in _results(out)] == [(1, "b.png")]

    out = tmp_path / "whole"
    run(_cfg(checkpoint, folder, out))
    assert [(r["image_id"], r["file_name"]) for r in _results(out)] == [(0, "a.jpg"), (1, "b.png")]


def test_a_coco_annotation_file_gives_its_person_boxes_and_png_on_request(tmp_path, checkpoint):
    # Issue 16 item 7: the ground-truth boxes of an annotation file as the box source (score 1,
    # crowd regions left out), and PNG drawings with vis_format=png.
    ann_file = COCO_DIR / "test_coco.json"
    coco = json.loads(ann_file.read_text())
    coco["annotations"][0]["iscrowd"] = 1  # image 785's only person becomes a crowd region
    edited = tmp_path / "gt.json"
    edited.write_text(json.dumps(coco))
    out = tmp_path / "out"
    summary = run(_cfg(checkpoint, COCO_DIR, out, f"boxes={edited}", "vis_format=png"))
    expected = Counter(a["image_id"] for a in coco["annotations"] if not a["iscrowd"])
    assert Counter(r["image_id"] for r in _results(out)) == expected
    assert summary["people"] == len(coco["annotations"]) - 1
    names = sorted(p.name for p in (out / "vis").iterdir())
    assert names == sorted(p.stem + ".png" for p in COCO_DIR.glob("*.jpg"))
    with (out / "vis" / names[0]).open("rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Instance score = box score 1 x mean of the keypoint scores above 0.2 (official rescoring).
    for r in _results(out):
        kept = np.array(r["keypoints"][2::3])
        kept = kept[kept > 0.2]
        assert r["score"] == pytest.approx(kept.mean() if kept.size else 0.0, rel=1e-9)
    with pytest.raises(ValueError, match="vis_format='gif'"):
        run(_cfg(checkpoint, COCO_DIR, tmp_path / "gif", "vis_format=gif"))
    del coco["annotations"][1]["bbox"]
    edited.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=f"boxes={edited}: not a usable COCO annotation file"):
        run(_cfg(checkpoint, COCO_DIR, tmp_path / "bad", f"boxes={edited}"))


def write_clip(path: Path, frames: int) -> Path:
    """An MJPG clip of the sample image at 320x212, shifted 10 px a frame."""
    frame = cv2.resize(cv2.imread(str(IMAGE)), (320, 212))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 212))
    for i in range(frames):
        writer.write(np.roll(frame, 10 * i, axis=1))
    writer.release()
    return path


def test_video_in_video_out(tmp_path, checkpoint):
    video = write_clip(tmp_path / "clip.avi", 3)
    out = tmp_path / "out"
    summary = run(_cfg(checkpoint, video, out, "test.batch_size=2"))  # batches span frames
    assert summary["images"] == 3 and summary["people"] == 3
    assert summary["vis"] == out / "vis" / "clip.avi"
    capture = cv2.VideoCapture(str(summary["vis"]))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 3 and frames[0].shape == (212, 320, 3)
    results = _results(out)
    assert [r["image_id"] for r in results] == [0, 1, 2]
    assert all(r["file_name"] == "clip.avi" for r in results)


def test_camera_index_reads_frames_until_max_frames(tmp_path, checkpoint, monkeypatch):
    # No webcam on a CI machine: camera 0 is served by a real capture of a real video file, the
    # only stand-in; everything after cv2.VideoCapture(0) is the camera path itself.
    video = write_clip(tmp_path / "webcam.avi", 5)
    real = cv2.VideoCapture
    opened = []

    def capture(source, *args):
        opened.append(source)
        return real(str(video)) if source == 0 else real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    out = tmp_path / "out"
    summary = run(_cfg(checkpoint, "0", out, "max_frames=3", "test.batch_size=2"))
    assert opened[0] == 0 and isinstance(opened[0], int)
    assert summary["images"] == 3 and summary["vis"] == out / "vis" / "camera0.mp4"
    results = _results(out)
    assert [r["image_id"] for r in results] == [0, 1, 2]
    assert {r["file_name"] for r in results} == {"camera0.mp4"}
    drawn = real(str(summary["vis"]))
    assert drawn.isOpened() and int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    drawn.release()
    with pytest.raises(ValueError, match="max_frames=0"):
        run(_cfg(checkpoint, "0", out, "max_frames=0"))


def test_unopenable_camera_is_named(tmp_path, checkpoint):
    with pytest.raises(OSError, match="input=97: cannot open camera 97"):
        run(_cfg(checkpoint, "97", tmp_path / "out"))


def test_person_box_and_score_tag_are_drawn_where_they_belong():
    from posematch.draw import BOX

    image = np.zeros((240, 320, 3), np.uint8)
    kpts = np.full((17, 2), 150.0)
    scores = np.zeros(17)
    draw_pose(image, kpts, scores, COCO_SPEC, box=(60, 80, 120, 100), label="0.87")
    box = (np.abs(image.astype(int) - BOX) <= 40).all(-1)  # antialiased lines: near the colour
    assert box[130, 60] and box[130, 180] and box[80, 120] and box[180, 120]  # the four sides
    assert not box[130, 120]  # inside: empty (no joint above vis_thr)
    # The tag sits on the box's top-left corner, above it: filled with BOX, with dark text in it.
    ys, xs = np.nonzero(box[:80])
    assert xs.min() == 60 and ys.max() == 79 and ys.min() > 50
    tag = image[ys.min() : 80, 60 : xs.max() + 1]
    assert (tag.max(-1) < 60).sum() > 20  # the text strokes
    # Without a box the tag goes above the drawn joints.
    image = np.zeros((240, 320, 3), np.uint8)
    scores[:] = 0.9
    draw_pose(image, kpts, scores, COCO_SPEC, label="0.50")
    ys, xs = np.nonzero((np.abs(image.astype(int) - BOX) <= 40).all(-1))
    assert ys.max() <= 150 and xs.min() == 150


@pytest.mark.parametrize(
    ("make_input", "overrides", "named"),
    [
        (lambda d: d / "nope.jpg", [], "nope.jpg"),
        (lambda d: d / "clip.gif", [], "clip.gif"),
        (lambda d: IMAGE, ["boxes=/no/such/dets.json"], "boxes=/no/such/dets.json"),
        (lambda d: IMAGE, ["detector=torchvision"], "detector=torchvision"),
        (lambda d: IMAGE, ["detector=torchvision", "detector_weights=/no/w.pth"], "/no/w.pth"),
    ],
)
def test_errors_name_the_path_or_option(tmp_path, monkeypatch, checkpoint, make_input, overrides,
                                        named):  # fmt: skip
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    input_ = make_input(tmp_path)
    if input_.suffix == ".gif":
        input_.write_bytes(b"GIF89a")
    cfg = _cfg(checkpoint, input_, tmp_path / "out", *overrides)
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        run(cfg)
    assert named in str(err.value)


def test_auto_detector_finds_weights_in_the_hub_cache_only(tmp_path, monkeypatch, checkpoint):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_detector_weights() is None
    out = tmp_path / "out"
    run(_cfg(checkpoint, IMAGE, out, "detector=auto"))  # no weights: the whole image, score 1
    assert len(_results(out)) == 1
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    name = next(iter(torchvision_weight_files()))
    (cache / name).write_bytes(b"")
    assert find_detector_weights() == cache / name


@pytest.mark.slow
def test_torchvision_detector_from_a_local_weights_file(tmp_path, checkpoint):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    weights = tmp_path / "frcnn.pth"
    torch.save(detector.state_dict(), weights)
    image = cv2.imread(str(IMAGE))
    rgb = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        det = detector([rgb])[0]
    thr = 0.1
    n_person = int(((det["labels"] == 1) & (det["scores"] >= thr)).sum())
    out = tmp_path / "out"
    cfg = _cfg(checkpoint, IMAGE, out, "detector=torchvision", f"detector_weights={weights}",
               f"det_score_thr={thr}")  # fmt: skip
    assert run(cfg)["people"] == n_person == len(_results(out))


def test_draw_pose_marks_the_keypoint_and_skips_low_scores():
    image = np.zeros((120, 160, 3), np.uint8)
    kpts = np.zeros((17, 2))
    scores = np.zeros(17)
    kpts[5], kpts[6] = (40, 30), (100, 30)  # left and right shoulder: limb (5, 6) joins them
    scores[5] = scores[6] = 0.9
    draw_pose(image, kpts, scores, COCO_SPEC, vis_thr=0.3)
    assert tuple(image[30, 40]) == LEFT  # the joint's disc, at its centre
    limb = image[30, 70]  # on the limb between two sides: the centre colour (antialiased)
    assert limb[1] > 100 and limb[0] == limb[2] == 0 and CENTRE == (0, 200, 0)
    assert not image[0:3, 0:3].any()  # joints at (0, 0) score 0: not drawn
    ys, xs = np.nonzero(image.any(2))
    r = line_thickness(image) + 2  # disc radius + antialiasing
    assert ys.min() >= 30 - r and ys.max() <= 30 + r and xs.min() >= 40 - r and xs.max() <= 100 + r

    blank = np.zeros((120, 160, 3), np.uint8)
    draw_pose(blank, kpts, np.where(scores > 0, 0.29, 0.0), COCO_SPEC, vis_thr=0.3)
    assert not blank.any()


def test_line_thickness_grows_with_the_image():
    assert line_thickness(np.zeros((120, 160, 3), np.uint8)) == 1
    assert line_thickness(np.zeros((720, 1280, 3), np.uint8)) == 4
    assert line_thickness(np.zeros((2160, 3840, 3), np.uint8)) == 12


def test_one_corrupt_image_in_a_folder_is_reported_and_the_others_kept(tmp_path, checkpoint):
    # The fault: the JSON was written only at the end, so one bad file lost every result.
    folder = tmp_path / "images"
    folder.mkdir()
    image = cv2.resize(cv2.imread(str(IMAGE)), (320, 212))
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "c.jpg"), image)
    data = (folder / "a.jpg").read_bytes()
    (folder / "b.jpg").write_bytes(data[: len(data) // 3])  # truncated: decodes grey, no error
    out = tmp_path / "out"
    summary = run(_cfg(checkpoint, folder, out))
    assert [r["file_name"] for r in _results(out)] == ["a.jpg", "c.jpg"]
    assert summary["images"] == 2 and len(summary["skipped"]) == 1
    assert "b.jpg: image file is truncated" in (out / "bad_inputs.txt").read_text()
    assert not (out / "keypoints.partial.jsonl").exists()


def test_results_are_kept_as_they_come(tmp_path, checkpoint, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    image = cv2.resize(cv2.imread(str(IMAGE)), (320, 212))
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        cv2.imwrite(str(folder / name), image)
    import posematch.cli.infer as infer

    real = infer.draw_pose
    calls = []

    def crash_on_third(*args, **kw):  # a failure after two images were done
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(infer, "draw_pose", crash_on_third)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(checkpoint, folder, out, "test.batch_size=1"))
    lines = (out / "keypoints.partial.jsonl").read_text().splitlines()
    assert [json.loads(x)["file_name"] for x in lines] == ["a.jpg", "b.jpg", "c.jpg"][: len(lines)]
    assert len(lines) >= 2


def test_non_finite_box_is_named(tmp_path, checkpoint):
    boxes = tmp_path / "dets.json"
    dets = [{"image_id": 785, "category_id": 1, "bbox": [10, 20, float("nan"), 80], "score": 0.9}]
    boxes.write_text(json.dumps(dets))  # json writes the NaN token Python reads back
    with pytest.raises(ValueError, match=r"dets\.json: detection #0 is malformed .*not finite"):
        run(_cfg(checkpoint, IMAGE, tmp_path / "out", f"boxes={boxes}"))
