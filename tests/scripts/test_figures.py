"""The figure scripts: plot_heatmaps.py on real tiny runs (saved config + checkpoint on generated
synthetic data) and plot_loss_vs_localisation.py on metrics.jsonl files with hand-worked numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from matplotlib import image as mpimg
from omegaconf import OmegaConf

from posematch.codecs.geometry import HeatmapGeometry
from posematch.synthetic import generate
from tests.conftest import REPO
from tests.scripts import load_script

PYTHON = sys.executable
# One image through a small net: more threads only contend on a shared CPU (10x slower here).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0
    assert img[..., :3].std() > 0.01, "a single-colour image"
    return img


# ---------------------------------------------------------------- plot_heatmaps.py


def _make_run(run_dir: Path, experiment: str, data_root: Path, layout: str) -> None:
    """A posematch-train run directory: the composed config and randomly initialised weights, as
    ``best.pth`` (a bare state dict) or ``last.pth`` (the trainer's resume state)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"data.root={data_root}"])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # unresolved, as Hydra saves it
    torch.manual_seed(0)
    state = instantiate(cfg.model).state_dict()
    if layout == "best":
        torch.save(state, run_dir / "best.pth")
    else:
        torch.save({"model": state, "epoch": 1, "best": None}, run_dir / "last.pth")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("figures")
    data = tmp / "synthetic"
    generate(str(data), 1, 3, seed=0, workers=1)
    sinkhorn, mse = tmp / "run_sinkhorn", tmp / "run_mse"
    _make_run(sinkhorn, "demo/synthetic_sinkhorn", data, "best")
    _make_run(mse, "demo/synthetic_mse", data, "last")
    return sinkhorn, mse, data


def test_plot_heatmaps_draws_both_runs(runs, tmp_path):
    sinkhorn, mse, _ = runs
    out = tmp_path / "fig" / "heatmaps.png"
    cmd = [PYTHON, "scripts/plot_heatmaps.py", "--runs", str(sinkhorn), str(mse), "--out", str(out)]
    proc = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 runs x 4 joints (" in proc.stdout
    assert f"{sinkhorn} (best.pth, matching loss)" in proc.stdout
    assert f"{mse} (last.pth, MSE)" in proc.stdout  # no best.pth: falls back to last.pth
    img = _read_png(out)
    assert img.shape[1] > img.shape[0]  # 2 rows of 5 panels: wider than high


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_plot_heatmaps_options_and_errors(runs, tmp_path, capsys, one_thread):
    sinkhorn, mse, data = runs
    mod = load_script("plot_heatmaps")
    out = tmp_path / "relu.png"
    argv = ["--runs", str(mse), "--relu", "--flip", "--index", "2", "--joints", "nose", "14"]
    assert mod.main([*argv, "--data-root", str(data), "--out", str(out)]) == 0
    assert "1 run x 2 joints (nose, right_knee)" in capsys.readouterr().out
    assert _read_png(out).shape[0] > 0

    missing = tmp_path / "nowhere"
    assert mod.main(["--runs", str(sinkhorn), "--data-root", str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing / "annotations" / "person_keypoints_val2017.json") in err
    assert "--data-root" in err
    assert mod.main(["--runs", str(sinkhorn), "--index", "10000", "--out", str(out)]) == 2
    assert "--index 10000" in capsys.readouterr().err
    assert mod.main(["--runs", str(sinkhorn), "--joints", "tail", "--out", str(out)]) == 2
    assert "--joints tail" in capsys.readouterr().err
    assert mod.main(["--runs", str(tmp_path), "--out", str(out)]) == 2
    assert str(tmp_path / ".hydra" / "config.yaml") in capsys.readouterr().err
    assert mod.main(["--runs", str(sinkhorn), "--checkpoint", "last", "--out", str(out)]) == 2
    assert f"{sinkhorn}: no checkpoint (last.pth)" in capsys.readouterr().err


@pytest.mark.parametrize("udp", [False, True])
def test_heatmap_extent_puts_pixel_centres_where_the_codec_maps_them(udp):
    """Heatmap pixel j drawn over [left, right] with w pixels has its centre at
    left + (j + 0.5) (right - left) / w, which must be the codec's to_input(j): j * 4 standard,
    j * 95 / 23 with UDP (96 px input, 24 px heatmap)."""
    mod = load_script("plot_heatmaps")
    left, right, bottom, top = mod.heatmap_extent(HeatmapGeometry((96, 128), (24, 32), udp))
    j, i = np.arange(24), np.arange(32)
    sx, sy = (95 / 23, 127 / 31) if udp else (4.0, 4.0)
    np.testing.assert_allclose(left + (j + 0.5) * (right - left) / 24, j * sx, atol=1e-9)
    np.testing.assert_allclose(top + (i + 0.5) * (bottom - top) / 32, i * sy, atol=1e-9)
    if not udp:
        assert (left, right, bottom, top) == (-2.0, 94.0, 126.0, -2.0)


def test_default_joints_prefer_the_labelled_side():
    mod = load_script("plot_heatmaps")
    from posematch.keypoints import COCO, MPII

    labelled = np.ones(17, dtype=bool)
    assert mod.default_joints(COCO.names, labelled) == [9, 7, 13, 15]  # left_wrist ... left_ankle
    labelled[9] = False  # left wrist unlabelled: the right one
    assert mod.default_joints(COCO.names, labelled)[0] == 10
    assert mod.default_joints(MPII.names, np.ones(16, dtype=bool)) == [15, 14, 4, 5]


# ---------------------------------------------------------------- plot_loss_vs_localisation.py


def _metrics(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True)
    lines = [json.dumps(r) for r in records]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def _loss_runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    # Matching-loss-like run: loss falls every epoch, AP rises at the 3 validation epochs: rho = -1.
    a = _metrics(tmp_path / "run_a", [
        {"epoch": e, "train_loss": 11.0 - e, "lr": 1e-3, "sinkhorn_iters": 6.0,
         **({"val/AP": 0.1 * e - 0.1, "val/AP50": 0.5} if e % 2 == 0 else {})}
        for e in range(1, 7)
    ])  # fmt: skip
    # MSE-like run: loss ranks (4, 3, 2, 1), AP ranks (1, 3, 2, 4): sum d^2 = 9 + 0 + 0 + 9 = 18,
    # rho = 1 - 6 * 18 / (4 * (16 - 1)) = -0.8.
    aps = [0.1, 0.3, 0.2, 0.4]
    b = _metrics(tmp_path / "run_b", [
        {"epoch": e, "train_loss": 0.001 * (5 - e), "lr": 1e-3, "val/AP": aps[e - 1]}
        for e in range(1, 5)
    ])  # fmt: skip
    c = _metrics(tmp_path / "run_c", [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 4)])
    return a, b, c


def _run_loss_script(*args: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "scripts/plot_loss_vs_localisation.py", *args]
    return subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120, check=False
    )


def test_loss_vs_localisation_table_spearman_and_png(tmp_path):
    a, b, _ = _loss_runs(tmp_path)
    out = tmp_path / "out" / "loss.png"
    proc = _run_loss_script("--runs", str(a), str(b), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "Spearman rho(train_loss, val/AP) = -1.000 (n=3)" in text
    assert "Spearman rho(train_loss, val/AP) = -0.800 (n=4)" in text
    # epoch 6 of run a: loss 5, normalised by epoch 1's 10 -> 0.5, AP 0.5
    assert any(line.split() == ["6", "5", "0.5000", "0.5000"] for line in text.splitlines())
    # epoch 4 of run b: loss 0.001 / 0.004 = 0.25
    assert any(line.split() == ["4", "0.001", "0.2500", "0.4000"] for line in text.splitlines())
    img = _read_png(out)
    assert img.shape[1] > img.shape[0]  # two panels side by side


def test_loss_vs_localisation_runs_without_validation_are_named(tmp_path):
    a, _, c = _loss_runs(tmp_path)
    proc = _run_loss_script("--runs", str(c), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    assert f"{c}: no epoch has both 'train_loss' and 'val/AP'" in proc.stderr
    assert not (tmp_path / "x.png").exists()

    mod = load_script("plot_loss_vs_localisation")
    out = tmp_path / "mixed.png"
    assert mod.main(["--runs", str(a), str(c), "--out", str(out)]) == 1  # c is left out
    assert out.is_file()
    assert mod.main(["--runs", str(a), "--metric", "val/AP50", "--out", str(out)]) == 0
    assert mod.main(["--runs", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_loss_vs_localisation_figure_reads_in_percent_with_whole_epochs(tmp_path):
    # Issue 16 item 7: AP in percent like the tables, the epoch colour bar in integers.
    mod = load_script("plot_loss_vs_localisation")
    a, b, _ = _loss_runs(tmp_path)
    curves = [mod.load_curve(str(r), None, "train_loss", "val/AP") for r in (a, b)]
    fig = mod.plot(curves, "train_loss", "val/AP")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "val/AP (%)"
    plotted = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    assert sorted(set(np.round(plotted, 6))) == [10.0, 20.0, 30.0, 40.0, 50.0]
    bar = next(a for a in fig.axes if a.get_ylabel() == "epoch")
    ticks = [t for t in bar.get_yticks() if bar.get_ylim()[0] <= t <= bar.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert curves[0].val_metric.max() == pytest.approx(0.5)  # the data is not changed


def test_spearman_needs_three_points():
    mod = load_script("plot_loss_vs_localisation")
    assert mod.spearman(np.array([2.0, 1.0]), np.array([0.1, 0.2])) == (None, "n/a (n=2 < 3)")
    rho, text = mod.spearman(np.array([3.0, 2.0, 1.0]), np.array([0.1, 0.2, 0.3]))
    assert rho == pytest.approx(-1.0) and text == "-1.000 (n=3)"
    assert mod.spearman(np.ones(3), np.array([0.1, 0.2, 0.3]))[0] is None
