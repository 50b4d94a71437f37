"""The dead-heatmap guard: it measures the dead share exactly, stops a dying run with the facts and
the remedies, and never stops a healthy one."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from posematch.engine.guard import DeadHeatmapGuard, DeadHeatmapsError, dead_share
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings
from posematch.engine.trainer import fit
from posematch.losses.mse import JointsMSELoss
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from posematch.models.pose_model import TopDownModel
from tests.engine.tiny import synthetic_set


def test_dead_share_counts_labelled_joints_without_a_positive_value():
    heatmaps = torch.full((2, 3, 4, 5), -1.0)
    heatmaps[0, 0, 2, 3] = 0.5  # alive
    heatmaps[1, 2, 0, 0] = 1e-6  # alive
    heatmaps[0, 1] = 0.0  # zero is not positive: dead
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # 4 labelled joints
    # labelled: (0,0) alive, (0,1) dead, (1,0) dead, (1,2) alive -> 2 of 4
    assert float(dead_share(heatmaps, weights)) == 0.5
    assert float(dead_share(heatmaps, torch.zeros(2, 3))) == 0.0


class Fixed:
    """A loss that returns 1 and no statistics."""

    target_kind = "dots"

    def with_stats(self, heatmaps, target, weights=None):
        from posematch.types import LossOutput

        return LossOutput(torch.ones(()), {})


def test_guard_stops_after_patience_steps_past_the_warmup_and_resets_on_a_live_step():
    guard = DeadHeatmapGuard(Fixed(), threshold=0.5, patience=3, warmup_steps=2)
    dead, alive = torch.full((1, 2, 3, 3), -1.0), torch.ones(1, 2, 3, 3)
    target, w = torch.zeros(1, 2, 2), torch.ones(1, 2)
    for _ in range(4):  # steps 1-2 warm-up, 3-4 count 1 and 2
        assert guard.with_stats(dead, target, w).stats["dead_share"] == 1.0
    assert guard.with_stats(alive, target, w).stats["dead_share"] == 0.0  # step 5 resets
    guard.with_stats(dead, target, w)  # 6
    guard.with_stats(dead, target, w)  # 7
    with pytest.raises(DeadHeatmapsError) as err:
        guard.with_stats(dead, target, w)  # 8: the third dying step in a row
    message = str(err.value)
    assert "since step 6" in message and "at step 8" in message
    assert "100%" in message and "activation=softplus" in message
    assert "trainer.dead_guard=null" in message


def relu_model(bias: float) -> nn.Module:
    """A tiny stride-4 network whose relu heatmaps start at ``bias`` everywhere."""
    torch.manual_seed(0)
    head = nn.Conv2d(8, 17, 3, stride=2, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.constant_(head.bias, bias)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    return TopDownModel(backbone, head)


def run(tmp_path, model, loss, **settings):
    data = synthetic_set(tmp_path / "synthetic")  # 12 images: 3 steps of 4 per epoch
    trainer = TrainerSettings(epochs=3, batch_size=4, num_workers=0, **settings)
    return fit(model, loss, data, OptimizerSettings(torch.optim.Adam, lr=1e-3), trainer,
               RunFolder(tmp_path / "run"), torch.device("cpu"))  # fmt: skip


def test_a_run_whose_heatmaps_are_dead_stops_with_the_error(tmp_path):
    # Every heatmap starts at -1: dead from the first step, and the matching loss cannot revive it.
    with pytest.raises(DeadHeatmapsError, match="since step 1"):
        run(tmp_path, relu_model(-1.0), SinkhornMatchingLoss(), dead_guard=0.5,
            dead_guard_patience=4)  # fmt: skip
    assert not (tmp_path / "run" / "best.pth").exists()


def test_the_guard_can_be_switched_off(tmp_path):
    summary = run(tmp_path, relu_model(-1.0), SinkhornMatchingLoss(), dead_guard=None)
    assert summary["epochs"] == 3


def test_healthy_runs_are_never_stopped_and_record_the_share(tmp_path):
    # Positive heatmaps (softplus): nothing can die even at the strictest setting.
    model = relu_model(0.1)
    model.head = nn.Sequential(model.head, nn.Softplus())
    run(tmp_path, model, SinkhornMatchingLoss(), dead_guard=0.0, dead_guard_patience=1)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["dead_share"] for r in records] == [0.0, 0.0, 0.0]

    # A loss that does not normalise relu heatmaps (MSE) is not watched, even with dead maps.
    class Unwatched(SinkhornMatchingLoss):
        normalises_relu = False

    assert not getattr(JointsMSELoss(), "normalises_relu", False)
    run(tmp_path / "other", relu_model(-1.0), Unwatched(), dead_guard=0.0, dead_guard_patience=1)


@pytest.mark.parametrize(
    ("option", "value"),
    [("dead_guard", 1.0), ("dead_guard", -0.1), ("dead_guard", "x"), ("dead_guard_patience", 0)],
)
def test_bad_guard_settings_name_the_option(option, value):
    with pytest.raises(ValueError, match=f"trainer.{option}"):
        TrainerSettings(**{option: value})


def test_under_ddp_every_rank_stops_at_the_same_step(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "synthetic"
    synthetic_set(data)  # generated once, before the workers start
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    worker = Path(__file__).with_name("ddp_guard_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(data), str(run_dir)]  # fmt: skip
    # A rank that stopped alone would leave the other waiting in a collective: the timeout fails it.
    proc = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = [(run_dir / f"stopped_rank{r}.txt").read_text() for r in (0, 1)]
    assert messages[0] == messages[1]  # the share is averaged over ranks: one verdict, one step
    assert "since step 1" in messages[0]
    assert not (run_dir / "best.pth").exists()
