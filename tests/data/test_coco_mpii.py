"""COCO and MPII datasets on the real samples in ../shared/data, against values worked by hand."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from posematch.codecs.dots import DotCodec
from posematch.codecs.gaussian import GaussianHeatmapCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.mpii import MpiiKeypoints
from posematch.data.topdown import BadRecordError
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO, MPII
from posematch.types import Batch
from tests.conftest import SHARED_DATA

COCO_DIR = SHARED_DATA / "coco_sample"
MPII_DIR = SHARED_DATA / "mpii_sample"
ANN = str(COCO_DIR / "test_coco.json")
DETS = str(COCO_DIR / "test_coco_det_AP_H_56.json")


def coco_dataset(**kw) -> CocoKeypoints:
    pipeline = kw.pop("pipeline", TopDownPipeline((192, 256), COCO))
    codec = kw.pop("codec", DotCodec((192, 256), (48, 64)))
    return CocoKeypoints(kw.pop("ann_file", ANN), str(COCO_DIR), pipeline, codec, **kw)


def test_gt_boxes_keep_the_12_annotated_people():
    ds = coco_dataset()
    assert len(ds) == 12  # 14 annotations, two without keypoints (ids 1202706, 508900)
    per_image = {}
    for inst in ds.instances:
        per_image[inst.image_id] = per_image.get(inst.image_id, 0) + 1
    assert per_image == {785: 1, 40083: 2, 196141: 4, 197388: 5}


def test_gt_box_to_centre_scale_by_hand():
    inst = coco_dataset().instances[0]  # annotation 442619, bbox [280.79, 44.73, 218.7, 346.68]
    # clipped box: x2 = 280.79 + 217.7, y2 = 44.73 + 345.68; w grows to 0.75 * 345.68 = 259.26
    np.testing.assert_allclose(inst.center, [389.64, 217.57], atol=1e-9)
    np.testing.assert_allclose(inst.scale, [259.26 / 200 * 1.25, 345.68 / 200 * 1.25], atol=1e-9)
    assert inst.keypoints[5].tolist() == [399, 108] and inst.visible[5] == 2


def test_detection_boxes_and_score_threshold():
    all_dets = coco_dataset(boxes="det", det_file=DETS)
    assert len(all_dets) == 118
    confident = coco_dataset(boxes="det", det_file=DETS, det_score_thr=0.9)
    assert len(confident) == 14  # README: 14 detections above 0.9
    assert all(inst.score >= 0.9 for inst in confident.instances)
    with pytest.raises(ValueError, match="det_file"):
        coco_dataset(boxes="det")


def test_sample_has_image_targets_weights_and_meta():
    ds = coco_dataset()
    sample = ds[0]
    assert sample.image.shape == (3, 256, 192) and sample.image.dtype == torch.uint8
    assert sample.target.shape == (17, 2)
    torch.testing.assert_close(sample.target, sample.keypoints / 4)
    assert sample.target_weight.tolist() == [1.0] * 17
    assert sample.image_id == 785 and sample.box_score == 1.0
    gaussian = coco_dataset(codec=GaussianHeatmapCodec((192, 256), (48, 64)))[0]
    assert gaussian.target.shape == (17, 64, 48)
    batch = Batch.collate([ds[0], ds[1]])
    assert batch.image.shape == (2, 3, 256, 192) and batch.image_id.tolist() == [785, 40083]
    assert batch.inverse.dtype == torch.float64 and batch.valid.tolist() == [True, True]


def test_flip_pairs_by_hand():
    pipe = TopDownPipeline(
        (192, 256), COCO, train=True, augmentation={"scale_factor": 0.0, "rotation_prob": 0.0}
    )
    inst = coco_dataset().instances[0]
    image = np.zeros((425, 640, 3), np.uint8)
    for seed in range(20):
        crop = pipe(image, inst.keypoints, inst.visible, inst.center, inst.scale,
                    np.random.default_rng(seed))  # fmt: skip
        if crop.flipped:
            break
    assert crop.flipped
    # left_shoulder (5) at (399, 108) becomes right_shoulder (6) at x = 640 - 1 - 399 = 240.
    back = crop.keypoints @ crop.inverse[:, :2].T + crop.inverse[:, 2]
    mirrored = np.array([640 - 1 - 399, 108.0])
    flipped_frame_to_image = back[6].copy()
    flipped_frame_to_image[0] = 640 - 1 - flipped_frame_to_image[0]
    np.testing.assert_allclose(flipped_frame_to_image, mirrored, atol=1e-9)
    np.testing.assert_allclose(back[6], [399, 108], atol=1e-9)


def test_missing_image_names_the_file_and_skip_bad_counts(tmp_path):
    ann = json.loads((COCO_DIR / "test_coco.json").read_text())
    ann["images"][0]["file_name"] = "does_not_exist.jpg"
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    ds = coco_dataset(ann_file=str(path))
    with pytest.raises(BadRecordError, match=r"does_not_exist\.jpg"):
        ds[0]
    train = TopDownPipeline((192, 256), COCO, train=True)
    skipping = coco_dataset(ann_file=str(path), skip_bad=True, pipeline=train)
    sample = skipping[0]  # training: the next readable instance stands in
    assert sample.image_id == 40083 and sample.valid
    skipping[0]
    assert skipping.skipped() == 1  # one record, however often it is drawn
    scoring = coco_dataset(ann_file=str(path), skip_bad=True)
    sample = scoring[0]  # evaluation: never another instance in its place
    assert sample.image_id == 785 and not sample.valid
    assert scoring.skipped() == 1


def test_malformed_record_names_the_annotation(tmp_path):
    ann = json.loads((COCO_DIR / "test_coco.json").read_text())
    ann["annotations"][1]["keypoints"] = ann["annotations"][1]["keypoints"][:50]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    with pytest.raises(BadRecordError, match="annotation id 198196"):
        coco_dataset(ann_file=str(path))
    ds = coco_dataset(ann_file=str(path), skip_bad=True)
    assert len(ds) == 11 and len(ds.bad_records) == 1


def test_unreadable_image_names_the_file(tmp_path):
    shutil.copytree(COCO_DIR, tmp_path / "coco")
    (tmp_path / "coco" / "000000000785.jpg").write_bytes(b"not a jpeg")
    ds = CocoKeypoints(str(tmp_path / "coco" / "test_coco.json"), str(tmp_path / "coco"),
                       TopDownPipeline((192, 256), COCO), DotCodec())  # fmt: skip
    with pytest.raises(BadRecordError, match=r"000000000785\.jpg: cannot decode image"):
        ds[0]


def mpii_dataset(**kw) -> MpiiKeypoints:
    pipeline = TopDownPipeline((256, 256), MPII)
    codec = DotCodec((256, 256), (64, 64))
    return MpiiKeypoints(str(MPII_DIR / "test_mpii.json"), str(MPII_DIR), pipeline, codec, **kw)


def test_mpii_official_conventions_by_hand():
    ds = mpii_dataset()
    assert len(ds) == 5
    inst = ds.instances[0]  # 005808361.jpg, centre [966, 340], scale 4.718488
    assert inst.image_id == 5808361
    np.testing.assert_allclose(inst.center, [965.0, 340 + 15 * 4.718488 - 1], atol=1e-9)
    np.testing.assert_allclose(inst.scale, [4.718488 * 1.25] * 2, atol=1e-12)
    np.testing.assert_allclose(inst.keypoints[0], [803.0, 710.0])
    assert ds.instances[2].visible.tolist()[:6] == [0, 1, 1, 1, 1, 0]  # ankles not annotated
    sample = ds[2]
    assert sample.image.shape == (3, 256, 256)
    assert sample.target_weight[0] == 0 and sample.target_weight[5] == 0


def test_mpii_flip_pairs_match_the_joint_names():
    for i, j in MPII.flip_pairs:
        a, b = MPII.names[i], MPII.names[j]
        assert a[0] != b[0] and a[1:] == b[1:]  # r_ankle <-> l_ankle, ...
    for i, j in COCO.flip_pairs:
        assert COCO.names[i].replace("left", "right") == COCO.names[j]


def test_set_epoch_reaches_persistent_loader_workers():
    # The fault: persistent workers kept the dataset copy they started with, so every epoch
    # repeated epoch 0's augmentation (and a resumed run drew other crops than the whole run).
    from torch.utils.data import DataLoader

    def crops(num_workers: int) -> list[torch.Tensor]:
        ds = coco_dataset(pipeline=TopDownPipeline((192, 256), COCO, train=True))
        loader = DataLoader(ds, batch_size=4, num_workers=num_workers,
                            persistent_workers=num_workers > 0, collate_fn=Batch.collate)  # fmt: skip
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out.append(torch.cat([b.image for b in loader]))
        return out

    plain, workers = crops(0), crops(1)
    assert not torch.equal(plain[0], plain[1])  # each epoch its own draws
    for a, b in zip(plain, workers, strict=True):
        assert torch.equal(a, b)  # whatever the number of workers
