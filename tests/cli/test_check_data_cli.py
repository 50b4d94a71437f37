"""posematch-check-data on the documented folder tree, built from the real samples: everything
present gives rc 0; a missing file is named with its option and where it comes from, rc 1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO, SHARED_DATA

EXE = shutil.which("posematch-check-data") or str(REPO / ".venv" / "bin" / "posematch-check-data")


def coco_tree(root: Path) -> Path:
    """data/coco as the README lays it out, with the sample's files in place of the real ones."""
    sample = SHARED_DATA / "coco_sample"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        shutil.copy(
            sample / "test_coco.json", root / "annotations" / f"person_keypoints_{split}.json"
        )
        (root / split).mkdir()
        for image in sample.glob("*.jpg"):
            shutil.copy(image, root / split / image.name)
    (root / "person_detection_results").mkdir()
    shutil.copy(sample / "test_coco_det_AP_H_56.json",
                root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json")  # fmt: skip
    return root


def check(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *overrides], capture_output=True, text=True, timeout=120)


def test_complete_tree_passes_and_a_missing_file_is_named(tmp_path):
    root = coco_tree(tmp_path / "coco")
    imagenet = tmp_path / "pretrained" / "hrnet_w32-36af842e.pth"
    imagenet.parent.mkdir()
    imagenet.write_bytes(b"presence is all this command checks")
    experiment = "experiment=coco/hrnet_w32_384x288_sinkhorn"
    ok = check(experiment, f"data.root={root}", f"model.pretrained={imagenet}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all 6 present" in ok.stdout and "(4 files)" in ok.stdout
    assert f"present  model.pretrained = {imagenet}" in ok.stdout
    (root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json").unlink()
    bad = check(experiment, f"data.root={root}", f"model.pretrained={imagenet}")
    assert bad.returncode == 1
    line = next(x for x in bad.stdout.splitlines() if "MISSING" in x)
    assert "data.val.det_file" in line and "person detections released with HRNet" in line


def test_paper_experiment_needs_its_imagenet_file_unless_told_none(tmp_path):
    root = coco_tree(tmp_path / "coco")
    experiment = "experiment=coco/hrnet_w48_384x288_mse"
    default = check(experiment, f"data.root={root}")
    assert default.returncode == 1
    line = next(x for x in default.stdout.splitlines() if "MISSING" in x)
    assert "model.pretrained = data/pretrained/hrnet_w48-8ef0771d.pth" in line
    assert "HRNet-W48 ImageNet weights" in line
    scratch = check(experiment, f"data.root={root}", "model.pretrained=none")
    assert scratch.returncode == 0, scratch.stdout + scratch.stderr
    assert "model.pretrained" not in scratch.stdout


def test_a_missing_imagenet_start_is_named(tmp_path):
    root = coco_tree(tmp_path / "coco")
    proc = check("experiment=coco/hrnet_w32_384x288_sinkhorn", f"data.root={root}",
                 f"model.pretrained={tmp_path / 'hrnet_w32-36af842e.pth'}")  # fmt: skip
    assert proc.returncode == 1
    assert "MISSING  model.pretrained" in proc.stdout and "ImageNet weights" in proc.stdout


def test_a_deeplabcut_project_and_the_packaged_imagenet_weights_are_listed(tmp_path):
    ok = check("experiment=dlc/openfield_mse", f"data.root={SHARED_DATA / 'dlc_openfield'}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"present  data.train.project = {SHARED_DATA / 'dlc_openfield'}" in ok.stdout
    assert "present  model.pretrained = " in ok.stdout
    assert "efficientnet-lite0-57934424.pth" in ok.stdout
    missing = check("experiment=dlc/openfield_mse", f"data.root={tmp_path / 'no_project'}")
    assert missing.returncode == 1
    assert f"MISSING  data.train.project = {tmp_path / 'no_project'}" in missing.stdout
