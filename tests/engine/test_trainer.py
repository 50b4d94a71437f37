"""The trainer: exact resume, checkpoint files, failure on non-finite loss."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from posematch.engine import checkpoint
from posematch.engine.trainer import TrainerSettings, fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.tiny import synthetic_set, tiny_model


def _fit(run_dir, data, epochs, resume=None, **kw):
    settings = TrainerSettings(epochs=epochs, batch_size=4, num_workers=0, seed=3, **kw)
    return fit(
        tiny_model(), SinkhornMatchingLoss(), data, partial(torch.optim.Adam, lr=1e-2), settings,
        run_dir, torch.device("cpu"),
        scheduler_fn=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.1),
        resume=resume,
    )  # fmt: skip


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    whole = _fit(tmp_path / "whole", data, epochs=3)
    _fit(tmp_path / "split", data, epochs=2)  # the run "stops" after epoch 2's checkpoint
    resumed = _fit(tmp_path / "split", data, epochs=3, resume="auto")
    assert resumed["history"] == whole["history"]
    a = checkpoint.load(tmp_path / "whole" / "last.pth")
    b = checkpoint.load(tmp_path / "split" / "last.pth")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 3
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_training_lowers_the_loss(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    summary = _fit(tmp_path / "run", data, epochs=4)
    assert summary["history"][-1] < summary["history"][0]


def test_checkpoints_load_without_code_and_leave_no_temporary_files(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    _fit(tmp_path / "run", data, epochs=1)
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "best", "rng", "history"} <= state.keys()
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_non_finite_loss_stops_training(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")

    class Exploding(SinkhornMatchingLoss):
        def forward(self, *args):
            return super().forward(*args) * float("nan")

    settings = TrainerSettings(epochs=1, batch_size=4, num_workers=0)
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        fit(tiny_model(), Exploding(), data, partial(torch.optim.Adam, lr=1e-3), settings,
            tmp_path / "run", torch.device("cpu"))  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value"),
    [("epochs", 0), ("batch_size", 0), ("amp", "fp8"), ("grad_clip", -1.0), ("num_workers", -1)],
)
def test_bad_settings_name_the_option(option, value):
    with pytest.raises(ValueError, match=f"trainer.{option}"):
        TrainerSettings(**{option: value})


def test_heatmap_panel_marks_the_ground_truth_dot_in_red():
    from posematch.engine.logging import heatmap_panel

    heat = torch.zeros(4, 6, 5)
    heat[:, 2, 2] = 1.0
    dots = torch.tensor([[1.0, 3.0], [0.0, 0.0], [4.0, 5.0], [2.0, 2.0]])
    panel = heatmap_panel(heat, dots, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert panel.shape == (3, 2 * 6 + 3, 2 * 5 + 3)  # 2 x 2 tiles with 1 px padding
    tile0 = panel[:, 1:7, 1:6]
    assert tile0[:, 3, 1].tolist() == [1.0, 0.0, 0.0]  # the dot, red
    assert tile0[:, 2, 2].tolist() == [1.0, 1.0, 1.0]  # the prediction, white
    tile1 = panel[:, 1:7, 7:12]
    assert tile1[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # unlabelled: no dot drawn


def test_warmup_scales_the_first_steps_and_leaves_the_epoch_schedule_alone(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    seen: list[float] = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    settings = TrainerSettings(
        epochs=4, batch_size=4, num_workers=0, seed=3, warmup_iters=3, warmup_ratio=0.1
    )
    fit(
        tiny_model(), SinkhornMatchingLoss(), data, partial(Recording, lr=1e-2), settings,
        tmp_path / "run", torch.device("cpu"),
        scheduler_fn=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.1),
    )  # fmt: skip
    per_epoch = len(seen) // 4
    assert per_epoch > 3
    # warm-up: 1e-2 * (0.1 * (1 - s/3) + s/3) for steps s = 0, 1, 2; then the schedule: x0.1 at 2
    expected = [1e-3, 4e-3, 7e-3] + [1e-2] * (2 * per_epoch - 3) + [1e-3] * (2 * per_epoch)
    assert seen == pytest.approx(expected, rel=1e-12)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["lr"] for line in lines] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])


def test_resume_drops_metrics_of_epochs_the_checkpoint_does_not_have(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    _fit(tmp_path / "run", data, epochs=2)
    # As if killed after logging epoch 3 but before its checkpoint was renamed into place.
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": -1.0}) + "\n")
    _fit(tmp_path / "run", data, epochs=3, resume="auto")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] > 0
