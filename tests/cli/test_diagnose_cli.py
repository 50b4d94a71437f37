"""posematch-diagnose end to end: the installed entry point on a tiny posematch-train run folder
(its saved config composed from the real train config, synthetic data, a small HRNet)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from posematch.cli.diagnose import run, select_split
from posematch.evaluation.coco import STAT_NAMES
from posematch.keypoints import COCO as COCO_SPEC
from tests.conftest import REPO
from tests.engine.tiny import synthetic_set

TRAIN = ["data=synthetic", "model=hrnet_tiny", "codec=dots", "loss=sinkhorn",
         "data.input_size=[64,64]", "data.heatmap_size=[16,16]"]  # fmt: skip
TOP_KEYS = {"run", "checkpoint", "split", "ann_file", "setup", "ap", "ap_oracle", "recall_at_oks",
            "joint_error", "mean_error", "heatmap_health"}  # fmt: skip
ERROR_KEYS = {"signed_image_px", "signed_heatmap_px", "abs_heatmap_px", "joints"}


def _compose(name: str, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as posematch-train leaves it: .hydra/config.yaml and best.pth."""
    tmp = tmp_path_factory.mktemp("diagnose")
    data = tmp / "synthetic"
    synthetic_set(data)
    run = tmp / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = _compose("train", *TRAIN, f"data.root={data}")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    torch.manual_seed(0)
    torch.save(instantiate(cfg.model).state_dict(), run / "best.pth")
    return run


def _check_report(report: dict) -> None:
    assert report.keys() == TOP_KEYS
    assert set(report["ap"]) == set(STAT_NAMES) == set(report["ap_oracle"])
    assert all(0.0 <= report["ap_oracle"][k] <= 1.0 for k in ("AP", "AR"))
    assert list(report["recall_at_oks"]) == [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]
    assert set(report["joint_error"]) == {*COCO_SPEC.names, "all"}
    assert set(report["joint_error"]["all"]) == {"median_px", "p90_px", "median_rel", "p90_rel",
                                                 "count"}  # fmt: skip
    assert report["joint_error"]["all"]["count"] > 0
    assert set(report["mean_error"]) == {"flip", "no_flip"}
    assert set(report["mean_error"]["flip"]) == ERROR_KEYS == set(report["mean_error"]["no_flip"])
    assert set(report["heatmap_health"]) == {"dead_share", "top_mass", "window_mass", "heatmaps"}
    assert 0.0 <= report["heatmap_health"]["dead_share"] <= 1.0
    assert report["setup"]["matched"] == report["setup"]["gt_instances"] > 0


def test_posematch_diagnose_writes_json_and_markdown_into_the_run(run_dir, tmp_path):
    config_before = (run_dir / ".hydra" / "config.yaml").read_text()
    exe = shutil.which("posematch-diagnose") or str(REPO / ".venv" / "bin" / "posematch-diagnose")
    cmd = [exe] if Path(exe).is_file() else [sys.executable, "-m", "posematch.cli.diagnose"]
    cmd += [f"run={run_dir}", "device=cpu", "num_workers=0", "batch_size=16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "diagnosis.json").read_text())
    _check_report(report)
    assert report["split"] == "val" and report["checkpoint"].endswith("best.pth")
    text = (run_dir / "diagnosis.md").read_text()
    assert "| scores | AP | AP50 | AP75 | APM | APL | AR |" in text and "oracle" in text
    assert "## Heatmap health" in text and text in proc.stdout
    # The run's own config is untouched, and nothing lands in the current folder.
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before
    assert list(tmp_path.iterdir()) == []


def test_split_test_reads_test2017(run_dir, tmp_path):
    data = Path(OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.root)
    ann = data / "annotations"
    if not (data / "test2017").is_dir():  # a copy of val under the test split's names
        shutil.copy(ann / "person_keypoints_val2017.json", ann / "person_keypoints_test2017.json")
        shutil.copytree(data / "val2017", data / "test2017")
    cfg = _compose("diagnose", f"run={run_dir}", "split=test", f"out={tmp_path}", "device=cpu",
                   "num_workers=0", "checkpoint=best.pth")  # fmt: skip
    report = run(cfg)
    _check_report(report)
    assert report["split"] == "test"
    assert report["ann_file"] == str(ann / "person_keypoints_test2017.json")
    assert (tmp_path / "diagnosis.json").is_file() and (tmp_path / "diagnosis.md").is_file()


def test_split_test_replaces_val2017_in_the_val_paths():
    cfg = _compose("train", *TRAIN, "data.root=/d")
    select_split(cfg, "test")
    assert cfg.data.val.ann_file == "/d/annotations/person_keypoints_test2017.json"
    assert cfg.data.val.image_dir == "/d/test2017"
    assert cfg.data.evaluator.ann_file == "/d/annotations/person_keypoints_test2017.json"
    with pytest.raises(ValueError, match="split='train'"):
        select_split(cfg, "train")
    cfg.data.val.ann_file = "/d/mine.json"
    with pytest.raises(ValueError, match=r"data\.val\.ann_file=/d/mine\.json"):
        select_split(cfg, "test")
