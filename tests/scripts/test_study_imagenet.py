"""scripts/study_imagenet.py: the fine-tune stage's jobs and report, from fixture run folders."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tests.scripts import load_script


def _finished(folder: Path, epochs: int, **val: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
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
    assert len(keys) == len(set(keys)), f"a key given twice (the last would win): {keys}"
    return dict(pairs)


def test_finetune_trains_each_missing_base_then_each_arm_from_a_finished_one(tmp_path):
    s = load_script("study_imagenet")
    runs = tmp_path / "runs"
    args = _args(runs)
    bases = s.finetune_base_jobs(args, "openfield")
    assert [str(d.relative_to(runs)) for _, d, _ in bases] == [
        "openfield/final/mse/fold1",
        "openfield/final/mse/fold2",
    ]
    base = _options(bases[1][0])
    # the search is not under --runs: the lr comes from the recorded selection
    assert base["optim.optimizer.lr"] == "1e-3"
    assert (base["trainer.epochs"], base["trainer.warmup_iters"]) == ("100", "50")
    assert "model.init_from" not in base and bases[1][2] == 100
    # fold 1's base stopped at epoch 60 of 100, fold 2's finished: only fold 2 is fine-tuned
    _finished(runs / "openfield/final/mse/fold1", 60, RMSE=3.0)
    _finished(runs / "openfield/final/mse/fold2", 100, RMSE=2.0)
    jobs = s.finetune_jobs(args, "openfield")
    assert [str(d.relative_to(runs)) for _, d, _ in jobs] == [
        "openfield/finetune/mse/lr5e-4/fold2",
        "openfield/finetune/zscore/lr1e-4/fold2",
    ]
    for cmd, run_dir, epochs in jobs:
        o = _options(cmd)
        assert o["model.init_from"] == str(runs / "openfield/final/mse/fold2/last.pth")
        assert (o["trainer.epochs"], o["schedule.milestones"]) == ("40", "[32]")
        assert o["trainer.warmup_iters"] == "0" and epochs == 40
        assert o["data.fold"] == "2" and o["hydra.run.dir"] == str(run_dir)
    assert _options(jobs[0][0])["loss"] == "mse"
    zscore = _options(jobs[1][0])
    assert (zscore["model.head.activation"], zscore["loss"]) == ("zscore", "sinkhorn")
    assert zscore["optim.optimizer.lr"] == "1e-4"


def test_a_project_without_finetune_lrs_and_a_missing_selection_give_no_jobs(tmp_path):
    s = load_script("study_imagenet")
    # mirror never had a fine-tune lr selection: openfield's lrs are not borrowed
    _finished(tmp_path / "mirror/final/mse/fold1", 100, RMSE=12.0)
    args = _args(tmp_path, selection={"mirror": {"mse": "1e-3"}}, folds=[1])
    assert s.finetune_base_jobs(args, "mirror") == []
    assert s.finetune_jobs(args, "mirror") == []
    # no search and no recorded lr: no base to train
    assert s.finetune_base_jobs(_args(tmp_path, selection=None), "openfield") == []


def test_a_partial_search_gives_way_to_the_recorded_selection(tmp_path):
    s = load_script("study_imagenet")
    # one of MSE's three lrs finished here (RMSE 1.5 would win); the complete search elsewhere
    # chose 1e-3
    _finished(tmp_path / "openfield/search/mse/lr2e-3", 100, RMSE=1.5)
    assert s.selected(_args(tmp_path), "openfield", "mse")[::2] == ("1e-3", "--selection")
    # without a record the partial search is used, and said to be partial
    lr, value, source = s.selected(_args(tmp_path, selection=None), "openfield", "mse")
    assert (lr, value, source) == ("2e-3", 1.5, "partial search (1 of 3 lrs)")
    # a complete search wins over the record: RMSE is lower-is-better
    _finished(tmp_path / "openfield/search/mse/lr5e-4", 100, RMSE=1.2)
    _finished(tmp_path / "openfield/search/mse/lr1e-3", 100, RMSE=1.9)
    assert s.selected(_args(tmp_path), "openfield", "mse") == ("5e-4", 1.2, "search")


def test_report_gives_the_finetune_rows_over_finished_folds_only(tmp_path):
    s = load_script("study_imagenet")
    runs = tmp_path / "runs"
    for fold, rmse in ((1, 2.0), (2, 3.0)):
        _finished(runs / "openfield/finetune/zscore/lr1e-4" / f"fold{fold}", 40, RMSE=rmse, AP=0.8)
    # an unfinished fold (epoch 20 of 40) is left out of the mean
    _finished(runs / "openfield/finetune/zscore/lr1e-4/fold3", 20, RMSE=50.0)
    # MSE's fine-tune only ran at another lr than FINETUNE's: no row
    _finished(runs / "openfield/finetune/mse/lr1e-3/fold1", 40, RMSE=1.0)
    text = s.report(s.collect(_args(runs)))
    row = next(line for line in text.splitlines() if line.startswith("| matching, zscore"))
    # RMSE 2 and 3: mean 2.5, sample sd 0.707
    assert "| 1e-4 | 2.50 ± 0.71 (n=2) |" in row
    # OKS-AP is a fraction in metrics.jsonl and a percent in the table
    assert "80.00 ± 0.00 (n=2)" in row
    # no MSE fine-tune at its lr finished: no row (the held-out table's MSE row has lr 1e-3)
    assert "| MSE, Gaussian (official head) | 5e-4 |" not in text


def test_the_cpu_sized_synthetic_protocol_names_its_model_once_and_scales_sigma(tmp_path):
    s = load_script("study_imagenet")
    args = _args(tmp_path, selection={"synthetic128": {"mse": "5e-4"}}, data="/d/synthetic")
    jobs = s.final_jobs(args, "synthetic128", "mse")
    # the search ran elsewhere: both seeds are finals here
    assert [(d, e) for _, d, e in jobs] == [
        (tmp_path / "synthetic128/final/mse/seed0", 12),
        (tmp_path / "synthetic128/final/mse/seed1", 12),
    ]
    o = _options(jobs[1][0])
    assert o["model"] == "efficientnet_lite0_s16" and o["data.root"] == "/d/synthetic"
    # the official sigma 2 at 64x48 heatmaps, scaled to 32x24
    assert o["codec.sigma"] == "1" and o["data.heatmap_size"] == "[24,32]"
    # 12 epochs, x0.1 at 80% and 93%
    assert (o["trainer.seed"], o["trainer.epochs"], o["schedule.milestones"]) == (
        "1",
        "12",
        "[9,11]",
    )
    assert _options(jobs[0][0])["trainer.seed"] == "0" and "data.fold" not in o
    # a local search: its seed-0 run is the search run, so only seed 1 is a final
    for lr, ap in (("5e-4", 80.0), ("1e-3", 85.0), ("2e-3", 82.0)):
        _finished(tmp_path / f"synthetic128/search/mse/lr{lr}", 12, AP=ap)
    [(cmd, run_dir, _)] = s.final_jobs(args, "synthetic128", "mse")
    assert run_dir.name == "seed1" and _options(cmd)["optim.optimizer.lr"] == "1e-3"
    assert (
        s.final_dirs(args, "synthetic128", "mse")[0] == tmp_path / "synthetic128/search/mse/lr1e-3"
    )


def _run_study(*argv: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "scripts" / "study_imagenet.py"
    return subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120
    )


def test_the_command_reads_the_selection_file_and_refuses_unknown_options(tmp_path):
    runs = tmp_path / "runs"
    for fold, rmse in zip((1, 2, 3, 4), (2.0, 2.2, 1.8, 2.0), strict=True):
        _finished(runs / f"openfield/final/mse/fold{fold}", 100, RMSE=rmse)
    sel = tmp_path / "earlier.json"
    sel.write_text(json.dumps({"datasets": {"openfield": {"selected": {"mse": "2e-3"}}}}))
    out = tmp_path / "study.json"
    argv = ["--datasets", "openfield", "--arms", "mse", "--stages", "final", "--runs", str(runs)]
    # the finals have finished: nothing trains, the report is written
    proc = _run_study(*argv, "--selection", str(sel), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "openfield mse: lr 2e-3 from the --selection" in proc.stdout
    data = json.loads(out.read_text())["datasets"]["openfield"]
    assert data["selected"] == {"mse": "2e-3"}
    assert [r["RMSE"] for r in data["heldout"]["mse"]] == [2.0, 2.2, 1.8, 2.0]
    bad = _run_study(*argv, "--ft-arms", "exp", "--out", str(out))
    assert bad.returncode == 2 and "--ft-arms: unknown ['exp']" in bad.stderr
    bad = _run_study(*argv, "--folds", "0,1", "--out", str(out))
    assert bad.returncode == 2 and "--folds: unknown [0]" in bad.stderr


def test_a_failed_test_scoring_is_said_and_its_output_kept(tmp_path, capsys):
    s = load_script("study_imagenet")
    run_dir = tmp_path / "synthetic128/search/mse/lr5e-4"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pth").write_bytes(b"not a checkpoint")
    s.score_test(run_dir, _args(tmp_path))
    said = capsys.readouterr().out
    assert "test scoring failed" in said and str(run_dir) in said
    # posematch-diagnose's own error is in the log, not thrown away
    assert "posematch-diagnose" in (run_dir / "test.log").read_text()
    assert not (run_dir / "test" / "diagnosis.json").exists()


def test_every_arm_composes_with_every_dataset_and_builds_its_loss(tmp_path):
    # An override that names no config key (a typo in an arm) fails here, not an hour into a study.
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    s = load_script("study_imagenet")
    args = _args(tmp_path)
    conf = str(Path(__file__).resolve().parents[2] / "conf")
    losses = {}
    for dataset in s.DATASETS:
        for arm in s.ARMS:
            cmd = s.command(dataset, arm, s.ARMS[arm][2][0], 0, 1, tmp_path / "run", args)
            overrides = [o for o in cmd[3:] if not o.startswith("hydra.")]
            with initialize_config_dir(conf, version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            losses[arm] = instantiate(cfg.loss)
    # the anchored relu arm: the paper's loss and head with DM-Count's mass term
    anchored = losses["relu_mass"]
    assert (anchored.mass_weight, anchored.mass_target, anchored.tv_weight) == (0.1, 100.0, 0.0)
    assert anchored.pixel_size == 1.0 and losses["relu"].mass_weight == 0.0


def test_the_search_is_one_hydra_multirun_and_an_older_run_keeps_its_folder(tmp_path):
    s = load_script("study_imagenet")
    args = _args(tmp_path, data="/d/synthetic")
    [(cmd, sweep, epochs)] = s.search_jobs(args, "synthetic128", "mse")
    assert cmd[3] == "-m" and sweep == tmp_path / "synthetic128/search/mse" and epochs == 12
    o = _options(cmd[4:])
    assert o["optim.optimizer.lr"] == "5e-4,1e-3,2e-3" and o["trainer.seed"] == "0"
    assert o["hydra.sweep.dir"] == str(sweep) and o["resume"] == "auto"
    assert o["hydra.sweep.subdir"] == "lr${optim.optimizer.lr}" and "hydra.run.dir" not in o
    # Hydra writes each lr as a float: the job folders are lr0.0005, lr0.001, lr0.002
    assert [s.search_dir(args, "synthetic128", "mse", lr).name for lr in s.ARMS["mse"][2]] == [
        "lr0.0005",
        "lr0.001",
        "lr0.002",
    ]
    # a finished run of the per-lr layout counts; an unfinished one trains on in its own folder;
    # only the lr without a run goes to the sweeper
    _finished(tmp_path / "synthetic128/search/mse/lr5e-4", 12, AP=80.0)
    _finished(tmp_path / "synthetic128/search/mse/lr1e-3", 6, AP=70.0)
    (older, _, _), (swept, _, _) = s.search_jobs(args, "synthetic128", "mse")
    assert _options(older)["hydra.run.dir"] == str(tmp_path / "synthetic128/search/mse/lr1e-3")
    assert _options(swept[4:])["optim.optimizer.lr"] == "2e-3"
    # every lr finished, in either layout: no job
    _finished(tmp_path / "synthetic128/search/mse/lr1e-3", 12, AP=85.0)
    _finished(tmp_path / "synthetic128/search/mse/lr0.002", 12, AP=82.0)
    assert s.search_jobs(args, "synthetic128", "mse") == []
    assert s.selected(args, "synthetic128", "mse") == ("1e-3", 85.0, "search")


def test_hydra_names_the_search_jobs_folders_as_the_selection_reads_them(tmp_path):
    # The real sweeper and trainer, two lrs of one step each on a tiny synthetic set: the folders
    # Hydra makes are the ones search_dir reads.
    from posematch.synthetic import generate

    s = load_script("study_imagenet")
    generate(str(tmp_path / "data"), 4, 2, seed=0, workers=1)
    args = _args(tmp_path / "runs", data=str(tmp_path / "data"))
    [(cmd, sweep, _)] = s.search_jobs(args, "synthetic128", "mse")
    tiny = {
        "optim.optimizer.lr": "5e-4,2e-3",
        "trainer.epochs": "1",
        "schedule.milestones": "[1]",
        "trainer.max_steps_per_epoch": "1",
        "trainer.batch_size": "2",
        "trainer.warmup_iters": "0",
        "trainer.val_every": "1",
    }
    cmd = [f"{k}={tiny[k]}" if k in tiny else o for o in cmd for k in [o.split("=", 1)[0]]]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.glob("lr*")) == ["lr0.0005", "lr0.002"]
    for lr in ("5e-4", "2e-3"):
        run_dir = s.search_dir(args, "synthetic128", "mse", lr)
        assert s.finished(run_dir, 1), sorted(p.name for p in sweep.iterdir())
        assert float(OmegaConf.load(run_dir / ".hydra/config.yaml").optim.optimizer.lr) == float(lr)


def test_only_the_no_warm_up_arm_drops_the_datasets_warm_up(tmp_path):
    s = load_script("study_imagenet")
    args = _args(tmp_path)
    run = tmp_path / "run"
    warm = {
        arm: _options(s.command("openfield", arm, "1e-3", 0, 0, run, args))["trainer.warmup_iters"]
        for arm in ("relu_mass", "relu_mass_nowarm", "mse")
    }
    # openfield warms up over 50 steps; the anchored relu arm's twin starts at the full lr
    assert warm == {"relu_mass": "50", "relu_mass_nowarm": "0", "mse": "50"}
    a, b = (
        _options(s.command("openfield", arm, "1e-3", 0, 0, run, args))
        for arm in ("relu_mass", "relu_mass_nowarm")
    )
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"trainer.warmup_iters"}


def test_an_arm_label_with_bars_stays_one_cell_of_the_report_table(tmp_path):
    import re

    s = load_script("study_imagenet")
    runs = tmp_path / "runs"
    for lr, rmse in (("0.0005", 7.7), ("0.001", 7.6), ("0.002", 54.1)):
        _finished(runs / f"openfield/search/relu_mass/lr{lr}", 100, RMSE=rmse)
    _finished(runs / "openfield/final/relu_mass/fold1", 100, RMSE=7.0)
    text = s.report(s.collect(_args(runs, arms=["relu_mass"], selection={})))
    header = next(line for line in text.splitlines() if line.startswith("| arm |"))
    row = next(line for line in text.splitlines() if line.startswith("| matching, relu head"))

    def cells(line: str) -> list[str]:  # split at the bars that are not escaped
        return re.split(r"(?<!\\)\|", line)

    assert len(cells(row)) == len(cells(header)) and "\\|sum relu(H) - 100\\|" in row
    assert "| 1e-3 | 7.00" in row


def test_an_arm_that_sets_any_protocol_key_keeps_its_own_value(tmp_path, monkeypatch):
    s = load_script("study_imagenet")
    monkeypatch.setitem(
        s.ARMS,
        "probe",
        ("a probe arm", ["loss=mse", "trainer.batch_size=4", "trainer.seed=7"], ("1e-3",)),
    )
    run = tmp_path / "run"
    # _options fails if a key is given twice; each of the arm's keys keeps the arm's value
    for kwargs in ({}, {"smoke": True}, {"init_from": tmp_path / "base.pth"}):
        o = _options(s.command("openfield", "probe", "1e-3", 0, 1, run, _args(tmp_path), **kwargs))
        assert (o["trainer.batch_size"], o["trainer.seed"]) == ("4", "7")
        assert o["optim.optimizer.lr"] == "1e-3" and o["data.fold"] == "1"


def test_a_run_that_fails_fails_the_command_after_the_report(tmp_path):
    """A base run whose folder another training holds (the real run lock, held by this live test
    process) is refused by posematch-train; the driver used to exit 0 and a chain of calls moved
    on as if the fold had trained."""
    from posematch.cli.run_lock import run_folder_lock

    runs = tmp_path / "runs"
    base = runs / "openfield/final/mse/fold1"
    base.mkdir(parents=True)
    sel = tmp_path / "earlier.json"
    sel.write_text(json.dumps({"datasets": {"openfield": {"selected": {"mse": "1e-3"}}}}))
    out = tmp_path / "study.json"
    with run_folder_lock(base):  # the lock a training takes, held by this live process
        proc = _run_study("--datasets", "openfield", "--arms", "mse", "--ft-arms", "mse",
                          "--stages", "finetune", "--folds", "1", "--selection", str(sel),
                          "--device", "cpu", "--runs", str(runs), "--out", str(out))  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 run(s) failed" in proc.stderr and str(base) in proc.stderr
    assert out.is_file()  # the report of what did finish is still written
    assert (
        "in use by another training"
        in (runs / "logs" / "openfield_final_mse_fold1.log").read_text()
    )
