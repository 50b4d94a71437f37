"""posematch-train killed with SIGKILL after a checkpoint, then ``resume=auto``: the same run.

The real entry point in subprocesses, the real config (the demo experiment, shrunk), real files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import torch

from tests.conftest import REPO
from tests.engine.tiny import synthetic_set

EPOCHS = 4


def _command(run_dir: Path, data: Path) -> list[str]:
    exe = shutil.which("posematch-train") or str(REPO / ".venv" / "bin" / "posematch-train")
    return [
        exe,
        "experiment=demo/synthetic_sinkhorn",
        f"data.root={data}",
        f"hydra.run.dir={run_dir}",
        "resume=auto",
        "data.input_size=[64,64]",
        "data.heatmap_size=[16,16]",
        f"trainer.epochs={EPOCHS}",
        "trainer.batch_size=4",
        "trainer.max_steps_per_epoch=6",
        "trainer.num_workers=0",
        "trainer.warmup_iters=2",
        "schedule.milestones=[2]",
        "validate=false",
        "device=cpu",
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")  # same kernels, same sums, in every run


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_sigkill_then_resume_auto_equals_the_uninterrupted_run(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data)
    whole, split = tmp_path / "whole", tmp_path / "split"
    subprocess.run(_command(whole, data), env=_env(), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(
        _command(split, data), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not (split / "last.pth").exists():  # epoch 1 is checkpointed
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = torch.load(split / "last.pth", weights_only=True)["epoch"]
    assert 1 <= stopped_at < EPOCHS
    assert not list(split.glob("*.tmp"))  # atomic checkpoints: nothing half-written

    subprocess.run(_command(split, data), env=_env(), check=True, capture_output=True, timeout=600)
    a = torch.load(whole / "last.pth", weights_only=True)
    b = torch.load(split / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert b["history"] == a["history"]  # the loss curve, epoch by epoch, bit for bit
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["epoch"] for r in _records(split)] == list(range(1, EPOCHS + 1))
    assert [r["train_loss"] for r in _records(split)] == [r["train_loss"] for r in _records(whole)]
    assert [r["lr"] for r in _records(split)] == [r["lr"] for r in _records(whole)]
