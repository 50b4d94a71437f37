"""SIGTERM to a real posematch-train process mid-epoch: it finishes the step, writes last.pth with
its place in the epoch and exits 143; resume=auto then ends exactly where the uninterrupted run does
(every weight, the loss curve and the metrics, bit for bit on CPU). The same for two gloo ranks under
torchrun, signalled through the launcher as a scheduler does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.cli.test_train_resume_cli import _command, _env
from tests.engine.tiny import synthetic_set

EPOCHS = 3
STEPS = 22  # per epoch


def _train(run_dir: Path, data: Path) -> list[str]:
    # 48 images (88 people) at batch 4: 22 steps an epoch; checkpoints at epoch ends only, unless
    # signalled.
    return [*_command(run_dir, data), f"trainer.epochs={EPOCHS}", "trainer.max_steps_per_epoch=null",
            "trainer.num_workers=1"]  # fmt: skip


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _sigterm_mid_epoch(cmd: list[str], run_dir: Path, log_path: Path, delay: float) -> int:
    """Start ``cmd``, wait for its first checkpoint (epoch 1 done, epoch 2 under way), wait
    ``delay`` s more, send SIGTERM, and return the exit code; the output goes to ``log_path``."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "last.pth").exists():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
        log.close()


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=48)
    whole, split = tmp_path / "whole", tmp_path / "split"
    subprocess.run(_train(whole, data), env=_env(), check=True, capture_output=True, timeout=600)

    code = _sigterm_mid_epoch(_train(split, data), split, tmp_path / "split.log", 0.2)
    assert code == 143, (tmp_path / "split.log").read_text()[-3000:]
    state = torch.load(split / "last.pth", weights_only=True)
    assert state["partial"] is not None, "the signal did not land mid-epoch"
    assert 0 < state["partial"]["batch"] < STEPS and state["epoch"] in (1, 2)
    assert not list(split.glob("*.tmp"))

    resumed = subprocess.run(_train(split, data), env=_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    a = torch.load(whole / "last.pth", weights_only=True)
    b = torch.load(split / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == STEPS * EPOCHS and b["partial"] is None
    assert b["history"] == a["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key in ("train_loss", "lr", "epoch"):
        assert [r[key] for r in _records(split)] == [r[key] for r in _records(whole)]


def _torchrun(run_dir: Path, data: Path) -> list[str]:
    """The same run as ``_train`` on two gloo ranks (each rank batch 4: 11 steps an epoch)."""
    train = _train(run_dir, data)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "posematch.cli.train", *train[1:]]  # fmt: skip


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_resume_equals_the_whole_run(tmp_path):
    # A scheduler stops a job by signalling its launcher; torchrun's agent passes SIGTERM on to
    # every rank. The ranks agree on the signal through an all-reduce, so both stop after the same
    # step; rank 0 writes the mid-epoch checkpoint, and the resumed pair ends where the
    # uninterrupted pair does.
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=48)
    whole, split = tmp_path / "whole", tmp_path / "split"
    done = subprocess.run(_torchrun(whole, data), env=_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    code = _sigterm_mid_epoch(_torchrun(split, data), split, tmp_path / "split.log", 0.3)
    text = (tmp_path / "split.log").read_text()
    assert code != 0, text[-3000:]
    state = torch.load(split / "last.pth", weights_only=True)
    assert state["partial"] is not None, "the signal did not land mid-epoch: " + text[-2000:]
    assert 0 < state["partial"]["batch"] < STEPS // 2
    # Each rank caught the signal, finished its step and stopped on it; no loader worker died of
    # the signal torchrun sends to the whole process group.
    assert text.count("signal 15: finishing the current step") == 2, text[-3000:]
    assert text.count("stopped by signal 15: resume from") == 2, text[-3000:]
    assert "DataLoader worker" not in text, text[-3000:]

    resumed = subprocess.run(_torchrun(split, data), env=_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(whole / "last.pth", weights_only=True)
    b = torch.load(split / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == (STEPS // 2) * EPOCHS and b["partial"] is None
    assert b["history"] == a["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
