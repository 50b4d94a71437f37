"""scripts/study_imagenet.py: the fine-tune stage's jobs and report, from fixture run folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.scripts import load_script


def _finished(folder: Path, epochs: int, **val: float) -> None:
    folder.mkdir(parents=True)
    records = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, epochs)]
    records.append({"epoch": epochs, "train_loss": 0.1} | {f"val/{k}": v for k, v in val.items()})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _args(runs: Path, **over) -> argparse.Namespace:
    base = dict(
        runs=runs,
        data="data/synthetic",
        workers=0,
        device="cpu",
        folds=[1, 2],
        ft_arms=["mse", "zscore"],
        selection={"openfield": {"mse": "1e-3"}},
        datasets=["openfield"],
        arms=["mse"],
    )
    return argparse.Namespace(**(base | over))


def _options(cmd: list[str]) -> dict[str, str]:
    pairs = [o.split("=", 1) for o in cmd[3:]]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key given twice (Hydra refuses it): {keys}"
    return dict(pairs)


def test_finetune_trains_the_missing_base_first_then_each_arm_from_it(tmp_path):
    s = load_script("study_imagenet")
    runs = tmp_path / "runs"
    jobs = s.finetune_jobs(_args(runs), "openfield")
    dirs = [str(d.relative_to(runs)) for _, d, _ in jobs]
    # each fold's base before its fine-tunes (a finished one is skipped when the jobs run)
    assert dirs == [
        "openfield/final/mse/fold1",
        "openfield/finetune/mse/fold1",
        "openfield/finetune/zscore/fold1",
        "openfield/final/mse/fold2",
        "openfield/finetune/mse/fold2",
        "openfield/finetune/zscore/fold2",
    ]
    base = _options(jobs[3][0])
    # the search is not under --runs: the lr comes from the recorded selection
    assert base["optim.optimizer.lr"] == "1e-3"
    assert (base["trainer.epochs"], base["trainer.warmup_iters"]) == ("100", "50")
    assert "model.init_from" not in base and jobs[3][2] == 100
    for cmd, run_dir, epochs in jobs[4:]:
        o = _options(cmd)
        assert o["model.init_from"] == str(runs / "openfield/final/mse/fold2/last.pth")
        assert (o["trainer.epochs"], o["schedule.milestones"]) == ("40", "[32]")
        assert o["trainer.warmup_iters"] == "0" and epochs == 40
        assert o["data.fold"] == "2" and o["hydra.run.dir"] == str(run_dir)
    assert _options(jobs[4][0])["loss"] == "mse"
    zscore = _options(jobs[5][0])
    assert (zscore["model.head.activation"], zscore["loss"]) == ("zscore", "sinkhorn")
    assert zscore["optim.optimizer.lr"] == "1e-4"


def test_finetune_without_a_selection_has_no_base_to_start_from(tmp_path):
    s = load_script("study_imagenet")
    jobs = s.finetune_jobs(_args(tmp_path, selection=None, folds=[1]), "openfield")
    # fold 1's fine-tunes still appear (their base may be trained by another call), but no base
    assert [str(d.relative_to(tmp_path)) for _, d, _ in jobs] == [
        "openfield/finetune/mse/fold1",
        "openfield/finetune/zscore/fold1",
    ]


def test_report_gives_the_finetune_rows_over_finished_folds_only(tmp_path):
    s = load_script("study_imagenet")
    runs = tmp_path / "runs"
    for fold, rmse in ((1, 2.0), (2, 3.0)):
        _finished(runs / "openfield/finetune/zscore" / f"fold{fold}", 40, RMSE=rmse, AP=80.0)
    # an unfinished fold (epoch 20 of 40) is left out of the mean
    _finished(runs / "openfield/finetune/zscore/fold3", 20, RMSE=50.0)
    text = s.report(s.collect(_args(runs)))
    row = next(line for line in text.splitlines() if line.startswith("| matching, zscore"))
    # RMSE 2 and 3: mean 2.5, sample sd 0.707
    assert "| 1e-4 | 2.50 ± 0.71 (n=2) |" in row
    assert "80.00 ± 0.00 (n=2)" in row
    # no MSE fine-tune finished: no row for it (the held-out table's MSE row has its own lr 1e-3)
    assert "| MSE, Gaussian (official head) | 5e-4 |" not in text


def test_the_cpu_sized_synthetic_protocol_names_its_model_once_and_scales_sigma(tmp_path):
    s = load_script("study_imagenet")
    args = _args(tmp_path, selection={"synthetic128": {"mse": "5e-4"}}, data="/d/synthetic")
    [(cmd, run_dir, epochs)] = s.final_jobs(args, "synthetic128", "mse")
    o = _options(cmd)
    assert o["model"] == "efficientnet_lite0_s16" and o["data.root"] == "/d/synthetic"
    # the official sigma 2 at 64x48 heatmaps, scaled to 32x24
    assert o["codec.sigma"] == "1" and o["data.heatmap_size"] == "[24,32]"
    # the final is seed 1 (seed 0 is the search run); 12 epochs, x0.1 at 80% and 93%
    assert (o["trainer.seed"], o["trainer.epochs"], o["schedule.milestones"]) == (
        "1",
        "12",
        "[9,11]",
    )
    assert run_dir == tmp_path / "synthetic128/final/mse/seed1" and epochs == 12
    assert "data.fold" not in o
