"""A training run that fails (here a non-finite loss) exits with its error, loader workers and all:
it used to print the error and then hang at interpreter exit, in the persistent workers' shutdown."""

from __future__ import annotations

import subprocess

from tests.cli.test_train_resume_cli import _command, _env
from tests.engine.tiny import synthetic_set


def test_a_failing_run_with_loader_workers_exits_with_its_error(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=16)
    # MSE at an absurd lr: its loss is inf or NaN by the second step (the trainer's stop).
    cmd = [
        x.replace("synthetic_sinkhorn", "synthetic_mse") for x in _command(tmp_path / "run", data)
    ]
    cmd += ["trainer.num_workers=2", "optim.optimizer.lr=1e30"]
    # The timeout is the test: a hung process would be killed here, and fail.
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=90)
    assert done.returncode != 0
    assert "non-finite training loss" in done.stderr + done.stdout, done.stderr[-3000:]


def test_a_bad_trainer_option_is_named_before_anything_is_written(tmp_path):
    # Issue 15: trainer.seed=abc gave a bare ValueError from the run record's int(); the record
    # was being written first.
    data = tmp_path / "synthetic"
    synthetic_set(data, num_train=16)
    cmd = [*_command(tmp_path / "run", data), "trainer.seed=abc"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=90)
    assert done.returncode != 0
    assert "trainer.seed='abc': expected an integer" in done.stderr + done.stdout
    # Nothing of the run's own: Hydra's log file is opened before any code of ours runs.
    written = (
        {p.name for p in (tmp_path / "run").iterdir()} if (tmp_path / "run").exists() else set()
    )
    assert written <= {"train.log"}
