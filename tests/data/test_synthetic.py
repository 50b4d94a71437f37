"""The synthetic COCO-format dataset, checked with real pycocotools and against its own geometry."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posematch import keypoints as kps
from posematch.synthetic import generate, synthesize

SPLITS = ("train2017", "val2017")


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def ann_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"person_keypoints_{split}.json"


def all_annotations(root: Path) -> list[tuple[dict, dict]]:
    """(image record, annotation) pairs of both splits."""
    pairs = []
    for split in SPLITS:
        data = json.loads(ann_file(root, split).read_text())
        images = {im["id"]: im for im in data["images"]}
        pairs += [(images[a["image_id"]], a) for a in data["annotations"]]
    return pairs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic"), 20, 10, seed=0, workers=1)


def test_layout_and_pycocotools_load(dataset: Path):
    for split, n in zip(SPLITS, (20, 10), strict=True):
        coco = quiet_coco(ann_file(dataset, split))
        assert len(coco.imgs) == n
        assert coco.getCatIds() == [1]
        cat = coco.cats[1]
        assert cat["name"] == "person"
        assert tuple(cat["keypoints"]) == kps.COCO.names
        assert [tuple(link) for link in cat["skeleton"]] == [
            (a + 1, b + 1) for a, b in kps.COCO.skeleton
        ]
        assert len(coco.anns) >= n  # at least one person per image on average
        for ann in coco.anns.values():
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert len(ann["keypoints"]) == 51


def test_images_exist_with_declared_size(dataset: Path):
    for split in SPLITS:
        for im in json.loads(ann_file(dataset, split).read_text())["images"]:
            img = cv2.imread(str(dataset / split / im["file_name"]))
            assert img is not None, im["file_name"]
            assert img.shape == (im["height"], im["width"], 3)
            assert 256 <= im["width"] <= 320 and 256 <= im["height"] <= 320


@pytest.mark.parametrize("split", SPLITS)
def test_annotations_score_the_hand_worked_ap_of_a_known_shift(dataset: Path, split: str):
    # Every labelled joint moved by the distance that gives OKS exactly 0.82 under COCO's formula
    # (d^2 = -2 ln(0.82) area (2 sigma)^2): a match at thresholds 0.50 ... 0.80 (7 of 10) and none
    # above, so AP = AR = 0.7 -- only if areas, visibility flags and keypoint order are what
    # COCOeval reads (unshifted joints, wrong areas or flags give another number).
    gt = quiet_coco(ann_file(dataset, split))
    sigmas = np.array(kps.COCO.sigmas)
    results = []
    for a in gt.anns.values():
        kpt = np.array(a["keypoints"], dtype=np.float64).reshape(17, 3)
        kpt[:, 0] += np.sqrt(-2 * np.log(0.82) * a["area"] * (2 * sigmas) ** 2)
        results.append(
            {"image_id": a["image_id"], "category_id": 1, "keypoints": kpt.ravel().tolist(),
             "score": 1.0}
        )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(0.7, abs=1e-12)  # AP, OKS 0.50:0.95, all areas
    assert ev.stats[5] == pytest.approx(0.7, abs=1e-12)  # AR


def test_same_seed_identical_bytes_other_seed_differs(tmp_path: Path):
    a = generate(tmp_path / "a", 4, 2, seed=3, workers=1)
    b = generate(tmp_path / "b", 4, 2, seed=3, workers=2)  # worker count must not matter
    c = generate(tmp_path / "c", 4, 2, seed=4, workers=1)
    for split in SPLITS:
        assert ann_file(a, split).read_bytes() == ann_file(b, split).read_bytes()
        assert ann_file(a, split).read_bytes() != ann_file(c, split).read_bytes()
        for img in sorted((a / split).iterdir()):
            assert img.read_bytes() == (b / split / img.name).read_bytes()


def test_cli_writes_the_layout(tmp_path: Path):
    # The documented command, as a user types it (python -m posematch.synthetic).
    cmd = [sys.executable, "-m", "posematch.synthetic", "--out", str(tmp_path / "cli"),
           "--train", "2", "--val", "1", "--seed", "3", "--workers", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 2 train + 1 val" in done.stdout
    generate(tmp_path / "api", 2, 1, seed=3, workers=1)
    for split in SPLITS:
        cli_bytes = ann_file(tmp_path / "cli", split).read_bytes()
        assert cli_bytes == ann_file(tmp_path / "api", split).read_bytes()


def test_held_out_splits_are_independent_draws_and_leave_train_val_unchanged(tmp_path: Path):
    plain = generate(tmp_path / "plain", 3, 2, seed=5, workers=1)
    full = generate(tmp_path / "full", 3, 2, seed=5, workers=1, num_test=2, num_pretrain=2)
    for split in ("train2017", "val2017"):  # adding held-out splits changes nothing else
        assert ann_file(plain, split).read_bytes() == ann_file(full, split).read_bytes()
    assert not (plain / "test2017").exists() and not ann_file(plain, "test2017").exists()
    images = {}
    for split in ("val2017", "test2017", "pretrain2017"):
        coco = COCO(str(ann_file(full, split)))
        assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) >= 2
        images[split] = {p.read_bytes() for p in (full / split).iterdir()}
    # Same file names, other pictures: every split is its own draw.
    assert not images["test2017"] & images["val2017"]
    assert not images["pretrain2017"] & (images["val2017"] | images["test2017"])


def test_visibility_zero_exactly_outside_the_image():
    """Unzeroed keypoints from ``synthesize``: v = 0 iff the joint lies in no pixel."""
    outside_seen = occluded_seen = 0
    for index in range(40):
        image, people = synthesize(0, "train", index)
        h, w = image.shape[:2]
        for p in people:
            x, y = p.keypoints[:, 0], p.keypoints[:, 1]
            inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
            np.testing.assert_array_equal(p.visible == 0, ~inside)
            outside_seen += int((~inside).sum())
            occluded_seen += int((p.visible == 1).sum())
    assert outside_seen > 0 and occluded_seen > 0  # truncation and occlusion both happen


def test_annotation_fields_agree_with_geometry(dataset: Path):
    pairs = all_annotations(dataset)
    for split in SPLITS:
        ids = [a["id"] for a in json.loads(ann_file(dataset, split).read_text())["annotations"]]
        assert len(set(ids)) == len(ids)
    for im, ann in pairs:
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        v = k[:, 2]
        assert set(np.unique(v)) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((v > 0).sum()) >= 3
        np.testing.assert_array_equal(k[v == 0, :2], 0)  # COCO: unlabelled joints are 0, 0, 0
        bx, by, bw, bh = ann["bbox"]
        assert 0 <= bx and 0 <= by and bx + bw <= im["width"] and by + bh <= im["height"]
        assert min(bw, bh) >= 12
        assert 0 < ann["area"] <= bw * bh
        lab = k[v > 0, :2]
        # bbox columns bx..bx+bw-1 cover x in [bx - 0.5, bx + bw - 0.5) (pixel-centre convention)
        assert np.all((lab[:, 0] >= bx - 0.5) & (lab[:, 0] < bx + bw - 0.5))
        assert np.all((lab[:, 1] >= by - 0.5) & (lab[:, 1] < by + bh - 0.5))


def test_limb_lengths_are_human(dataset: Path):
    """Thigh / upper-arm length ratio within [1.15, 1.80]; torso / shoulder width = 0.30 / 0.22.

    Nominal lengths are 0.245 and 0.17 of the figure height, and each limb segment is
    foreshortened by a factor in [0.8, 1] (out of the image plane), so the ratio lies in
    [0.245 * 0.8 / 0.17, 0.245 / (0.17 * 0.8)] = [1.153, 1.801]. The tolerance covers only the
    0.01-px rounding, so a wrong joint order (e.g. knee <-> ankle) fails.
    """
    ratios, torso = [], []
    for _, ann in all_annotations(dataset):
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        for sh, el, hip, kn in ((5, 7, 11, 13), (6, 8, 12, 14)):
            if (k[[sh, el, hip, kn], 2] > 0).all():
                upper_arm = np.linalg.norm(k[sh, :2] - k[el, :2])
                thigh = np.linalg.norm(k[hip, :2] - k[kn, :2])
                ratios.append(thigh / upper_arm)
        if (k[[5, 6, 11, 12], 2] > 0).all():
            shoulders = np.linalg.norm(k[5, :2] - k[6, :2])
            torso.append(
                np.linalg.norm((k[5, :2] + k[6, :2] - k[11, :2] - k[12, :2]) / 2) / shoulders
            )
    assert len(ratios) > 20
    assert 1.14 <= min(ratios) and max(ratios) <= 1.81
    # hip-to-shoulder 0.30 and shoulder width 0.22 of the height, never foreshortened
    np.testing.assert_allclose(torso, 0.30 / 0.22, rtol=2e-3)


def test_person_left_is_on_the_image_right(dataset: Path):
    """Frontal figures leaning at most 25 degrees: left shoulder / hip have the larger x."""
    for _, ann in all_annotations(dataset):
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        for left, right in ((5, 6), (11, 12), (1, 2), (3, 4)):
            if k[left, 2] > 0 and k[right, 2] > 0:
                assert k[left, 0] > k[right, 0]
