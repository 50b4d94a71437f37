"""Bad records and images never become a wrong number: each is a BadRecordError naming the file and
the record, or under ``skip_bad`` a skip counted once (issue 11). Real sample files, edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from posematch.codecs.dots import DotCodec
from posematch.data.coco import CocoKeypoints
from posematch.data.mpii import MpiiKeypoints
from posematch.data.topdown import BadRecordError, decode_image
from posematch.data.transforms import TopDownPipeline
from posematch.keypoints import COCO, MPII
from tests.conftest import SHARED_DATA

COCO_DIR = SHARED_DATA / "coco_sample"
MPII_DIR = SHARED_DATA / "mpii_sample"
DETS = COCO_DIR / "test_coco_det_AP_H_56.json"


def coco_ann() -> dict:
    return json.loads((COCO_DIR / "test_coco.json").read_text())


def write(tmp_path: Path, data, name: str = "ann.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))  # json writes NaN as a bare NaN token, which json reads
    return str(path)


def coco(ann_file: str, train: bool = False, **kw) -> CocoKeypoints:
    pipeline = TopDownPipeline((192, 256), COCO, train=train)
    image_dir = kw.pop("image_dir", str(COCO_DIR))
    return CocoKeypoints(ann_file, image_dir, pipeline, DotCodec((192, 256), (48, 64)), **kw)


def _annotation(ann: dict, ann_id: int) -> dict:
    return next(a for a in ann["annotations"] if a["id"] == ann_id)


@pytest.mark.parametrize(
    ("field", "edit", "message"),
    [
        (
            "keypoints",
            lambda a: a["keypoints"].__setitem__(0, float("nan")),
            "'keypoints'.*non-finite",
        ),
        ("bbox", lambda a: a["bbox"].__setitem__(2, float("inf")), "'bbox'.*non-finite"),
        ("area", lambda a: a.__setitem__("area", float("nan")), "'area'.*non-finite"),
        ("bbox", lambda a: a["bbox"].__setitem__(2, 0.0), "'bbox' has size 0.0 x"),
        ("bbox", lambda a: a["bbox"].__setitem__(3, -5.0), "'bbox' has size .* x -5.0"),
        ("keypoints", lambda a: a["keypoints"].__setitem__(2, 3), "visibility"),
    ],
)
def test_bad_ground_truth_record_is_named_or_counted(tmp_path, field, edit, message):
    ann = coco_ann()
    edit(_annotation(ann, 198196))
    path = write(tmp_path, ann)
    with pytest.raises(BadRecordError, match=f"ann.json annotation id 198196 .*{message}"):
        coco(path)
    ds = coco(path, skip_bad=True)
    assert len(ds) == 11 and ds.skipped() == 1
    assert ds.skipped_records() == [f"{path} annotation id 198196 (image 40083)"]


def test_annotation_of_an_unknown_image_is_not_dropped_silently(tmp_path):
    ann = coco_ann()
    _annotation(ann, 198196)["image_id"] = 123456789
    path = write(tmp_path, ann)
    with pytest.raises(BadRecordError, match="annotation id 198196: image_id 123456789 is not in"):
        coco(path)
    assert coco(path, skip_bad=True).skipped() == 1


def test_truncated_or_empty_annotation_file_is_named(tmp_path):
    text = (COCO_DIR / "test_coco.json").read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(BadRecordError, match=r"ann_file=.*cut\.json: not valid JSON"):
        coco(str(cut))
    empty = coco_ann()
    empty["annotations"] = []
    path = write(tmp_path, empty, "empty.json")
    with pytest.raises(BadRecordError, match=r"ann_file=.*empty\.json: no usable person"):
        coco(path)


def test_bad_detection_is_named_or_counted(tmp_path):
    dets = json.loads(DETS.read_text())
    dets[3]["bbox"][3] = 0.0
    dets[5]["bbox"][0] = float("nan")
    path = write(tmp_path, dets, "dets.json")
    ann = str(COCO_DIR / "test_coco.json")
    with pytest.raises(BadRecordError, match=r"dets\.json detection #3: 'bbox' has size"):
        coco(ann, boxes="det", det_file=path)
    ds = coco(ann, boxes="det", det_file=path, skip_bad=True)
    assert ds.skipped() == 2
    assert len(ds) == len(coco(ann, boxes="det", det_file=str(DETS))) - 2


def test_bad_mpii_record_is_named_or_counted(tmp_path):
    records = json.loads((MPII_DIR / "test_mpii.json").read_text())
    records[1]["joints"][4][0] = float("nan")
    path = write(tmp_path, records, "mpii.json")
    pipeline = TopDownPipeline((256, 256), MPII)
    with pytest.raises(BadRecordError, match=r"mpii\.json record #1: 'joints'.*non-finite"):
        MpiiKeypoints(path, str(MPII_DIR), pipeline, DotCodec((256, 256), (64, 64)))
    ds = MpiiKeypoints(path, str(MPII_DIR), pipeline, DotCodec((256, 256), (64, 64)), skip_bad=True)
    assert ds.skipped() == 1 and len(ds) == len(records) - 1


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_an_error_not_a_grey_picture(tmp_path, suffix):
    image = cv2.imread(str(COCO_DIR / "000000000785.jpg"))
    whole = tmp_path / f"whole{suffix}"
    cv2.imwrite(str(whole), image)
    np.testing.assert_array_equal(decode_image(str(whole)), cv2.imread(str(whole)))
    rgb = cv2.cvtColor(cv2.imread(str(whole)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_image(str(whole), rgb=True), rgb)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 3])
    if suffix == ".jpg":  # the fault itself: OpenCV decodes the cut JPEG without an error
        assert cv2.imread(str(cut)) is not None
    with pytest.raises(BadRecordError, match=r"cut\.(jpg|png): image file is truncated"):
        decode_image(str(cut))
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(BadRecordError, match=r"zero\.jpg: image file is empty"):
        decode_image(str(tmp_path / "zero.jpg"))


def test_truncated_image_in_a_dataset_is_skipped_once_and_counted(tmp_path):
    folder = tmp_path / "coco"
    shutil.copytree(COCO_DIR, folder)
    jpeg = folder / "000000040083.jpg"  # two people
    jpeg.write_bytes(jpeg.read_bytes()[:5000])
    ann = str(folder / "test_coco.json")
    with pytest.raises(BadRecordError, match=r"000000040083\.jpg: image file is truncated"):
        coco(ann, image_dir=str(folder))[1]
    train = coco(ann, train=True, image_dir=str(folder), skip_bad=True)
    seen = [train[i].image_id for i in range(len(train))] + [train[1].image_id]
    assert 40083 not in seen and train.skipped() == 2  # two records, each counted once
    scored = coco(ann, image_dir=str(folder), skip_bad=True)
    valid = [bool(scored[i].valid) for i in range(len(scored))]
    assert valid.count(False) == 2 and scored.skipped() == 2


def test_an_image_whose_size_differs_from_its_record_is_a_bad_record(tmp_path):
    # Issue 15: a val image replaced by a 1x1 JPEG (the json says 500 x 333) was cropped to a
    # blank and scored, exit 0.
    folder = tmp_path / "coco"
    shutil.copytree(COCO_DIR, folder)
    cv2.imwrite(str(folder / "000000040083.jpg"), np.zeros((1, 1, 3), np.uint8))
    ann = str(folder / "test_coco.json")
    message = r"000000040083\.jpg: decoded 1 x 1 px, but .*annotation id \d+ .* says 500 x 333"
    data = coco(ann, image_dir=str(folder))
    index = next(i for i, inst in enumerate(data.instances) if inst.image_id == 40083)
    with pytest.raises(BadRecordError, match=message):
        data[index]
    scored = coco(ann, image_dir=str(folder), skip_bad=True)
    assert [bool(scored[i].valid) for i in range(len(scored))].count(False) == 2
    assert scored.skipped() == 2
