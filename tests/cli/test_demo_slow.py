"""A short real training run with each loss lowers the loss and raises AP (``scripts/demo.py``).

The demo pipeline end to end on a smaller synthetic set: data generation, ``posematch-train`` for
both losses, COCOeval every epoch, the table and the figures. Marked slow (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_demo_trains_both_losses_lowers_the_loss_raises_ap_and_writes_the_table(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "demo.py"),
        "--data", str(tmp_path / "data"),
        "--runs", str(tmp_path / "runs"),
        "--out", str(tmp_path / "results"),
        "--train-images", "1000",
        "--val-images", "60",
        "--test-images", "60",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sinkhorn", "mse"):
        records = _records(tmp_path / "runs" / name)
        assert [r["epoch"] for r in records] == [1, 2, 3]
        assert records[-1]["train_loss"] < records[0]["train_loss"], name
        assert records[-1]["val/AP"] > records[0]["val/AP"], name
        assert records[-1]["val/dead_share"] == 0.0, name  # heatmap health is logged
        test = json.loads((tmp_path / "runs" / name / "test" / "diagnosis.json").read_text())
        assert test["split"] == "test" and "test2017" in test["ann_file"]
        assert 0 < test["ap"]["AP"] <= 1
    report = (tmp_path / "results" / "demo.md").read_text()
    assert "| matching loss (Sinkhorn) |" in report and "| MSE (Gaussian heatmaps) |" in report
    assert "| gain of the matching loss |" in report
    assert "held-out test split" in report
    for figure in ("fig3_heatmaps.png", "loss_vs_localisation.png"):
        assert (tmp_path / "results" / figure).stat().st_size > 10_000
