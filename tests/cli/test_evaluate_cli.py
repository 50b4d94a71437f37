"""posematch-eval end to end: the installed entry point, real config, real files, real COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.conftest import REPO, SHARED_DATA

COCO_DIR = SHARED_DATA / "coco_sample"
SAMPLE_OVERRIDES = [
    f"data.val.ann_file={COCO_DIR / 'test_coco.json'}",
    f"data.val.image_dir={COCO_DIR}",
    f"data.det_file={COCO_DIR / 'test_coco_det_AP_H_56.json'}",
    "model=hrnet_small",
    "data.input_size=[96,128]",
    "data.heatmap_size=[24,32]",
    "test.num_workers=0",
]


def _checkpoint(tmp_path: Path) -> Path:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*SAMPLE_OVERRIDES, "checkpoint=x", "output_dir=x"])
    torch.manual_seed(0)
    path = tmp_path / "model.pth"
    torch.save(instantiate(cfg.model).state_dict(), path)
    return path


def test_posematch_eval_prints_the_row_and_writes_metrics(tmp_path):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "run"
    exe = shutil.which("posematch-eval") or str(REPO / ".venv" / "bin" / "posematch-eval")
    cmd = [exe, *SAMPLE_OVERRIDES, f"checkpoint={ckpt}", "data.boxes=det", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| AP | AP50 | AP75 | APM | APL | AR |" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored"] is True and metrics["skipped"] == 0
    results = json.loads((out / "keypoints_results.json").read_text())
    # The independent truth: pycocotools alone on the results file the command wrote.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO_DIR / "test_coco.json"))
        ev = COCOeval(gt, gt.loadRes(str(out / "keypoints_results.json")), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ["AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"]
    assert [metrics[n] for n in names] == [float(v) for v in ev.stats]
    dets = json.loads((COCO_DIR / "test_coco_det_AP_H_56.json").read_text())
    assert {r["image_id"] for r in results} == {
        d["image_id"] for d in dets if d["category_id"] == 1
    }
    assert {"image_id", "category_id", "keypoints", "score"} <= results[0].keys()
    assert len(results[0]["keypoints"]) == 51


def test_missing_checkpoint_is_named(tmp_path):
    exe = shutil.which("posematch-eval") or str(REPO / ".venv" / "bin" / "posematch-eval")
    cmd = [
        exe,
        *SAMPLE_OVERRIDES,
        f"checkpoint={tmp_path / 'nope.pth'}",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "nope.pth" in proc.stderr


def test_an_unreadable_image_with_loader_workers_ends_the_process_with_the_error(tmp_path):
    # Issue 15: with test.num_workers=2 the BadRecordError was printed and the process never
    # exited (the workers outlived the error). Times out on that code.
    images = tmp_path / "images"
    images.mkdir()
    for image in COCO_DIR.glob("*.jpg"):
        shutil.copy(image, images / image.name)
    broken = images / "000000040083.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    overrides = [o for o in SAMPLE_OVERRIDES if not o.startswith(("data.val.image_dir", "test."))]
    cmd = [shutil.which("posematch-eval") or str(REPO / ".venv" / "bin" / "posematch-eval"),
           *overrides, f"data.val.image_dir={images}", "test.num_workers=2", "data.boxes=gt",
           f"checkpoint={_checkpoint(tmp_path)}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "000000040083.jpg: image file is truncated" in proc.stderr + proc.stdout
