"""The trainer: exact resume, checkpoint files, failure on non-finite loss."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
import torch

from posematch.engine import checkpoint
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings, Validation
from posematch.engine.trainer import fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from posematch.types import LossOutput
from tests.engine.tiny import synthetic_set, tiny_model


def _fit(run_dir, data, epochs, resume=None, **kw):
    settings = TrainerSettings(epochs=epochs, batch_size=4, num_workers=0, seed=3, **kw)
    schedule = partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.1)
    optim = OptimizerSettings(torch.optim.Adam, lr=1e-2, schedule=schedule)
    return fit(tiny_model(), SinkhornMatchingLoss(), data, optim, settings,
               RunFolder(run_dir, resume=resume), torch.device("cpu"))  # fmt: skip


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    # 3 steps per epoch: the stop after epoch 2 (step 6) is in the middle of the 8-step warm-up.
    whole = _fit(tmp_path / "whole", data, epochs=3, warmup_iters=8)
    _fit(tmp_path / "split", data, epochs=2, warmup_iters=8)  # the run "stops" after epoch 2
    resumed = _fit(tmp_path / "split", data, epochs=3, resume="auto", warmup_iters=8)
    assert resumed["history"] == whole["history"]
    a = checkpoint.load(tmp_path / "whole" / "last.pth")
    b = checkpoint.load(tmp_path / "split" / "last.pth")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 3
    assert a["warmup"]["last_epoch"] == b["warmup"]["last_epoch"] == 8
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_checkpoint_of_an_older_version_is_refused_by_name(tmp_path):
    # Issue 14 removed the shims for last.pth files from before the torch warm-up (no "warmup"
    # entry, replayed) and before the loss statistics (an "iters_sum" partial): refused, named.
    data = synthetic_set(tmp_path / "synthetic")
    _fit(tmp_path / "split", data, epochs=1, warmup_iters=8)
    path = tmp_path / "split" / "last.pth"
    state = torch.load(path, weights_only=True)
    del state["warmup"]
    checkpoint.atomic_save(state, path)
    with pytest.raises(
        ValueError, match=r"not a training checkpoint of this posematch version \(no warmup\)"
    ):
        _fit(tmp_path / "split", data, epochs=2, resume="auto", warmup_iters=8)


def test_a_resume_with_another_warmup_is_refused(tmp_path):
    # LinearLR scales whatever rate it finds: one started on a loaded rate would leave the lr
    # 1 / warmup_ratio too high for the rest of the run.
    data = synthetic_set(tmp_path / "synthetic")
    _fit(tmp_path / "run", data, epochs=1)
    with pytest.raises(ValueError, match="trained without a warm-up"):
        _fit(tmp_path / "run", data, epochs=2, resume="auto", warmup_iters=8)
    _fit(tmp_path / "warm", data, epochs=1, warmup_iters=8)
    with pytest.raises(ValueError, match="trained with a warm-up"):
        _fit(tmp_path / "warm", data, epochs=2, resume="auto")


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
        def with_stats(self, *args):
            out = super().with_stats(*args)
            return LossOutput(out.value * float("nan"), out.stats)

    settings = TrainerSettings(epochs=1, batch_size=4, num_workers=0)
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        fit(tiny_model(), Exploding(), data, OptimizerSettings(torch.optim.Adam, lr=1e-3), settings,
            RunFolder(tmp_path / "run"), torch.device("cpu"))  # fmt: skip


def test_loss_statistics_leave_with_the_value_and_are_averaged_per_epoch(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")  # 12 images: 3 steps of 4 per epoch
    seen: list[float] = []

    class Probed(SinkhornMatchingLoss):
        def with_stats(self, *args):
            out = super().with_stats(*args)
            seen.append(out.stats["sinkhorn_iters"])
            return LossOutput(out.value, {**out.stats, "probe": float(len(seen))})

    settings = TrainerSettings(epochs=2, batch_size=4, num_workers=0)
    fit(tiny_model(), Probed(), data, OptimizerSettings(torch.optim.Adam, lr=1e-3), settings,
        RunFolder(tmp_path / "run"), torch.device("cpu"))  # fmt: skip
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = len(seen) // 2
    assert [r["probe"] for r in records] == [(1 + steps) / 2, (steps + 1 + 2 * steps) / 2]
    assert records[0]["sinkhorn_iters"] == pytest.approx(sum(seen[:steps]) / steps)


@pytest.mark.parametrize(
    ("option", "value"),
    [("epochs", 0), ("batch_size", 0), ("amp", "fp8"), ("grad_clip", -1.0), ("num_workers", -1)],
)
def test_bad_settings_name_the_option(option, value):
    with pytest.raises(ValueError, match=f"trainer.{option}"):
        TrainerSettings(**{option: value})


def test_heatmap_panel_shows_each_joint_over_the_crop_with_its_name_and_ground_truth():
    from posematch.draw import GT_MARK, heatmap_panel

    # A 32x24 crop (W x H) whose left half is dark and right half bright; 8x6 heatmaps (stride 4).
    image = np.zeros((3, 24, 32), np.float32)
    image[:, :, 16:] = 200.0
    heat = np.zeros((4, 6, 8), np.float32)
    heat[:, 1, 6] = 1.0  # every prediction peaks at heatmap pixel (x=6, y=1)
    dots = np.array([[2.0, 4.0], [0.0, 0.0], [5.0, 3.0], [7.0, 5.0]])
    weight = np.array([1.0, 0.0, 1.0, 1.0])
    names = ["nose", "left_eye", "right_eye", "left_ear"]
    panel = heatmap_panel(image, heat, dots, weight, names=names, tile_width=160)
    tile_h = 120  # 160 * 24 / 32
    # 1 + 4 tiles in a 3 x 2 grid, 2 px padding.
    assert panel.shape == (2 * (tile_h + 2) + 2, 3 * (160 + 2) + 2, 3) and panel.dtype == np.uint8

    def tile(i):
        r, c = divmod(i, 3)
        return panel[2 + r * (tile_h + 2) : 2 + r * (tile_h + 2) + tile_h,
                     2 + c * 162 : 2 + c * 162 + 160]  # fmt: skip

    red = np.array(GT_MARK[::-1])  # RGB
    for i, (dot, w) in enumerate(zip(dots, weight, strict=True), start=1):
        t = tile(i).astype(int)
        # The ground truth ring is centred on the dot's place in the crop: heatmap pixel centre
        # (x, y) -> tile pixel (x + 0.5) * 20 - 0.5, where no other red is drawn.
        reds = np.argwhere((np.abs(t - red) <= 40).all(-1))
        if w == 0:
            assert len(reds) == 0, names[i - 1]
            continue
        centre = reds.mean(0)[::-1]
        np.testing.assert_allclose(centre, (dot + 0.5) * 20 - 0.5, atol=1.5)
        # Far from the peak and the ring, the tile is the crop itself in dimmed grey: dark left,
        # brighter right (the heatmap is 0 there and adds nothing).
        assert t[100, 10].tolist() == [0, 0, 0]
        assert t[100, 150].max() == t[100, 150].min() == 100
        # The name is written in a black strip at the top-left: white text pixels in it.
        assert (t[:12, :60] > 200).all(-1).any()
    # The heatmap's peak region is coloured (JET: not grey) around tile pixel (129.5, 29.5).
    peak = tile(1)[26:34, 126:134].astype(int)
    assert (peak.max(-1) - peak.min(-1)).max() > 100


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
    schedule = partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.1)
    fit(
        tiny_model(), SinkhornMatchingLoss(), data,
        OptimizerSettings(Recording, lr=1e-2, schedule=schedule), settings,
        RunFolder(tmp_path / "run"), torch.device("cpu"),
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


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_steps_run_the_model_in_half_precision_and_keep_the_loss_fp32(tmp_path, amp):
    data = synthetic_set(tmp_path / "synthetic")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    try:
        with torch.autocast("cpu", dtype=half):
            torch.nn.functional.conv2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3))
    except RuntimeError as err:  # this torch build has no CPU autocast for the dtype
        pytest.skip(f"CPU autocast {amp}: {err}")
    model = tiny_model()
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    model.head.register_forward_hook(lambda m, i, out: seen.append(("head", out.dtype)))

    class Recorded(SinkhornMatchingLoss):
        def with_stats(self, *args):
            out = super().with_stats(*args)
            seen.append(("loss", out.value.dtype))
            return out

    settings = TrainerSettings(epochs=1, batch_size=4, num_workers=0, amp=amp)
    summary = fit(model, Recorded(), data, OptimizerSettings(torch.optim.Adam, lr=1e-3), settings,
                  RunFolder(tmp_path / "run"), torch.device("cpu"))  # fmt: skip
    assert math.isfinite(summary["history"][0])
    assert ("head", half) in seen and ("loss", torch.float32) in seen
    assert all(dtype == torch.float32 for kind, dtype in seen if kind == "loss")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_clip_bounds_the_update_norm(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")

    def update_norm(clip):
        model = tiny_model(seed=1)
        before = [p.detach().clone() for p in model.parameters()]
        settings = TrainerSettings(epochs=1, batch_size=4, num_workers=0, max_steps_per_epoch=1,
                                   grad_clip=clip)  # fmt: skip
        fit(model, SinkhornMatchingLoss(), data, OptimizerSettings(torch.optim.SGD, lr=1.0), settings,
            RunFolder(tmp_path / f"run_{clip}"), torch.device("cpu"))  # fmt: skip
        # One plain SGD step at lr 1: the update is the gradient, its norm the clipped norm.
        return torch.cat([(p.detach() - b).flatten() for p, b in
                          zip(model.parameters(), before, strict=True)]).norm().item()  # fmt: skip

    free = update_norm(None)
    assert free > 1e-2
    assert update_norm(1e-3) == pytest.approx(1e-3, rel=1e-3)


def test_best_pth_holds_the_weights_of_the_epoch_with_the_best_monitored_metric(tmp_path):
    from posematch.codecs.dots import DotCodec
    from tests.engine.tiny import HEATMAP, INPUT, synthetic_val_set

    class Scripted:
        """An evaluator whose scores are given: what is under test is the trainer's choice."""

        primary_metric = "AP"
        metric_names = ("AP",)

        def __init__(self, values):
            self.values = list(values)

        def reset(self):
            pass

        def process(self, predictions):
            pass

        def evaluate(self):
            return {"AP": self.values.pop(0), "scored": True}

    root = tmp_path / "synthetic"
    data = synthetic_set(root)
    val, _ = synthetic_val_set(root)

    def train(run, scores):
        settings = TrainerSettings(epochs=len(scores), batch_size=4, num_workers=0, seed=2,
                                   val_every=1, monitor="AP")  # fmt: skip
        fit(tiny_model(), SinkhornMatchingLoss(), data, OptimizerSettings(torch.optim.Adam, lr=3e-2),
            settings, RunFolder(run), torch.device("cpu"),
            Validation(val, DotCodec(INPUT, HEATMAP), Scripted(scores)))  # fmt: skip

    train(tmp_path / "four", [0.1, 0.5, 0.3, 0.2])  # the best epoch is the second
    train(tmp_path / "two", [0.1, 0.5])  # the same run, stopped after that epoch
    best = torch.load(tmp_path / "four" / "best.pth", weights_only=True)
    second = torch.load(tmp_path / "two" / "last.pth", weights_only=True)["model"]
    last = torch.load(tmp_path / "four" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(v, second[k]) for k, v in best.items())
    assert not all(torch.equal(v, last[k]) for k, v in best.items())
