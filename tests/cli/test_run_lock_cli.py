"""One run folder, one training (issue 15): a live holder's lock refuses a second training before it
writes anything; a killed run's stale lock is replaced. Real processes, real files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from posematch.cli.run_lock import LOCK_NAME, RunFolderBusy, run_folder_lock
from tests.cli.test_train_resume_cli import _command, _env
from tests.engine.tiny import synthetic_set


def _hold(run_dir, pid: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))


def test_the_lock_is_held_for_the_block_and_refuses_a_live_holder(tmp_path, caplog):
    with run_folder_lock(tmp_path / "run") as path:
        assert json.loads(path.read_text())["pid"] > 0
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold(tmp_path / "run", sleeper.pid)
        with pytest.raises(RunFolderBusy, match=f"process {sleeper.pid}"):
            with run_folder_lock(tmp_path / "run"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_folder_lock(tmp_path / "run"):  # the holder has ended: a stale lock
        pass
    assert f"stale lock of process {sleeper.pid}" in caplog.text


def test_a_second_training_into_a_held_folder_is_refused_and_writes_nothing(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=16)
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _hold(run, sleeper.pid)
        done = subprocess.run(_command(run, data), env=_env(), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode != 0
        assert "is in use by another training" in done.stderr + done.stdout
        assert {p.name for p in run.iterdir()} <= {LOCK_NAME, "train.log"}
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its holder killed, the folder trains, and the lock is gone at the end.
    done = subprocess.run(_command(run, data), env=_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "last.pth").exists() and not (run / LOCK_NAME).exists()
