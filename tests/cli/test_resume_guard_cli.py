"""``resume`` into a run folder made with another config is refused, and a run's record is never
overwritten (issue 11): the installed entry point in subprocesses, real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.cli.test_train_resume_cli import _command, _env
from tests.engine.tiny import synthetic_set


def _train(run_dir: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*_command(run_dir, data), "trainer.epochs=1", *extra]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def _files(run_dir: Path) -> dict[str, str]:
    names = ["config.yaml", "metrics.jsonl", ".hydra/config.yaml", ".hydra/overrides.yaml"]
    return {name: (run_dir / name).read_text() for name in names}


def test_resume_with_another_loss_is_refused_and_the_record_kept(tmp_path):
    data, run = tmp_path / "synthetic", tmp_path / "run"
    synthetic_set(data)
    first = _train(run, data)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _files(run)
    assert (
        yaml.safe_load(before[".hydra/overrides.yaml"])[0] == "experiment=demo/synthetic_sinkhorn"
    )
    assert yaml.safe_load(before["config.yaml"])["loss"]["_target_"].endswith(
        "SinkhornMatchingLoss"
    )

    # The fault: an MSE command resumed the matching-loss folder, continued its weights under
    # the other loss, rewrote its config files and mixed both losses in metrics.jsonl.
    other = _train(run, data, "loss=mse", "codec=gaussian", "model.head.activation=none")
    assert other.returncode != 0
    assert "was trained with another config" in other.stderr and "loss._target_" in other.stderr
    assert _files(run) == before

    fresh = _train(run, data, "resume=null")  # no resume into a folder holding a run
    assert fresh.returncode != 0 and "already holds a run" in fresh.stderr
    assert _files(run) == before

    forced = _train(run, data, "trainer.epochs=2", "loss.reg=2.0", "resume_force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    after = _files(run)
    assert after["config.yaml"] == before["config.yaml"]  # the record of what the run was
    assert after[".hydra/config.yaml"] == before[".hydra/config.yaml"]
    assert yaml.safe_load((run / "config.resumed.yaml").read_text())["loss"]["reg"] == 2.0
    assert len(after["metrics.jsonl"].splitlines()) == 2
