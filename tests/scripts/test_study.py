"""scripts/study.py: the selection on val and the report, from fixture run folders (no training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tests.scripts import load_script


def _job(folder: Path, lr: str, gamma: str, val_ap: float | None) -> None:
    """A finished (or, with val_ap None, unfinished) search job as Hydra and the trainer leave it."""
    (folder / ".hydra").mkdir(parents=True)
    overrides = [
        "experiment=demo/synthetic_mse",
        f"optim.optimizer.lr={lr}",
        f"schedule.gamma={gamma}",
    ]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    records = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    if val_ap is not None:
        records.append({"epoch": 3, "train_loss": 0.4, "val/AP": val_ap, "val/dead_share": 0.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(runs=tmp_path / "runs", data=tmp_path / "data")


def test_selection_reads_each_jobs_own_overrides_and_picks_the_best_val_ap(tmp_path):
    study = load_script("study")
    sweep = tmp_path / "runs" / "search" / "mse"
    # Hydra writes 0.004 for 4.0e-3, and job numbers need not follow the grid order.
    aps = {("0.002", "0.1"): 0.70, ("0.002", "1.0"): 0.72, ("0.004", "0.1"): 0.81,
           ("0.004", "1.0"): 0.79, ("0.008", "0.1"): 0.80, ("0.008", "1.0"): 0.60}  # fmt: skip
    for i, ((lr, gamma), ap) in enumerate(reversed(list(aps.items()))):
        _job(sweep / str(i), lr, gamma, ap)
    job, lr, gamma, ap = study.selected("mse", _args(tmp_path))
    assert (lr, gamma, ap) == ("4.0e-3", "0.1", 0.81)
    assert job == sweep / "3"  # (0.004, 0.1) was written as job 3 (reversed order)
    runs = study.final_runs("mse", _args(tmp_path), "final")
    assert [seed for seed, _, _ in runs] == [0, 1]
    assert runs[0][1] == job  # seed 0 is the search run itself
    assert runs[1][1] == tmp_path / "runs" / "final" / "mse" / "seed1"
    assert "optim.optimizer.lr=4.0e-3" in runs[1][2] and "trainer.seed=1" in runs[1][2]
    assert "schedule.gamma=0.1" in runs[1][2]


def test_nothing_is_selected_until_every_cell_has_run(tmp_path):
    study = load_script("study")
    sweep = tmp_path / "runs" / "search" / "mse"
    for i, (lr, gamma) in enumerate(study.GRID):
        _job(sweep / str(i), lr, gamma, None if i == 4 else 0.5)
    assert study.selected("mse", _args(tmp_path)) is None
    assert study.final_runs("mse", _args(tmp_path), "final") == []
    report = study.report(_args(tmp_path))
    row = next(line for line in report.splitlines() if line.startswith("| MSE"))
    assert row.count("50.0") == len(study.GRID) - 1 and row.endswith("| – |")


def test_report_gives_mean_and_sample_sd_over_seeds_on_test(tmp_path):
    study = load_script("study")
    sweep = tmp_path / "runs" / "search" / "mse"
    for i, (lr, gamma) in enumerate(study.GRID):
        _job(sweep / str(i), lr, gamma, 0.5 + 0.01 * i)
    for seed, run_dir, _ in study.final_runs("mse", _args(tmp_path), "final"):
        out = run_dir / "test"
        out.mkdir(parents=True)
        ap = 0.80 if seed == 0 else 0.84
        report = {
            "ap": {"AP": ap, "AP50": 0.9, "AP75": 0.85, "AR": 0.86},
            "ap_oracle": {"AP": ap + 0.02},
            "joint_error": {"all": {"median_rel": 0.02, "p90_rel": 0.06}},
            "heatmap_health": {"dead_share": 0.0},
        }
        (out / "diagnosis.json").write_text(json.dumps(report))
    text = study.report(_args(tmp_path))
    row = next(
        line
        for line in text.split("## Held-out test, 3 epochs")[1].splitlines()
        if line.startswith("| MSE")
    )
    # mean 82.0, sample sd of (80, 84) = 2.83
    assert "| 82.0 ± 2.8 | s0: 80.0, s1: 84.0 |" in row
    assert "| 84.0 ± 2.8 |" in row  # oracle scores


def test_every_stage_gives_each_hydra_key_once(tmp_path):
    """Hydra keeps the last of two values for one key without a word; the long stages gave
    ``schedule.gamma`` twice (from the budget and from the setting), so a change to one of them
    would have been silently overridden."""
    study = load_script("study")
    for stage in ("final", "long", "long30"):  # pretrained needs a search; none ran here
        for name in ("mse", "match_in"):
            for _, _, cmd in study.final_runs(name, _args(tmp_path), stage):
                keys = [a.split("=", 1)[0] for a in cmd[1:]]
                assert len(keys) == len(set(keys)), (stage, name, cmd)
                if stage.startswith("long"):
                    assert "schedule.gamma=0.1" in cmd  # the x0.1 drop
