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


def test_resume_names_what_it_would_not_apply_and_follows_a_moved_folder(tmp_path):
    import shutil

    data, run = tmp_path / "synthetic", tmp_path / "run"
    synthetic_set(data)
    assert _train(run, data).returncode == 0

    # The fault: resume=auto with a new lr trained on at the checkpoint's lr, silently.
    lr = _train(run, data, "trainer.epochs=2", "optim.optimizer.lr=1e30")
    assert lr.returncode != 0
    assert "optim.optimizer.lr differ" in lr.stderr and "would not apply" in lr.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

    forced = _train(run, data, "trainer.epochs=2", "optim.optimizer.lr=1e30", "resume_force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (
        "optim.optimizer.lr differ from the run's but are NOT applied"
        in forced.stdout + forced.stderr
    )

    # The fault: a copied run folder was refused because data.evaluator.output_dir (a path
    # inside the folder) differed.
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    (moved / ".posematch.lock").unlink(missing_ok=True)
    again = _train(moved, data, "trainer.epochs=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len((moved / "metrics.jsonl").read_text().splitlines()) == 3
