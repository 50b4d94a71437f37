"""Heatmap health in the validation record of ``fit`` (metrics.jsonl and TensorBoard), and the
image -> heatmap map of the diagnosis, on hand-worked cases."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from posematch.codecs.dots import DotCodec
from posematch.engine.diagnose import image_to_heatmap
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings, Validation
from posematch.engine.trainer import fit
from posematch.evaluation.coco import CocoKeypointEvaluator
from posematch.keypoints import COCO
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.tiny import HEATMAP, INPUT, synthetic_set, synthetic_val_set

DEAD = 5  # joints 0..4 all negative


class FixedHeatmaps(nn.Module):
    """Every crop gets the same heatmaps: joints 0..4 all -1 (dead); the others 0 except a 2x2 block
    [[4, 2], [1, 1]] at the top left (top-pixel share 4/8 = 0.5, window share 8/8 = 1)."""

    def __init__(self) -> None:
        super().__init__()
        w, h = HEATMAP
        heat = torch.zeros(17, h, w)
        heat[:DEAD] = -1.0
        heat[DEAD:, 0:2, 0:2] = torch.tensor([[4.0, 2.0], [1.0, 1.0]])
        self.register_buffer("heat", heat)
        self.unused = nn.Parameter(torch.zeros(()))  # gets a zero gradient: nothing changes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heat.expand(images.shape[0], -1, -1, -1) + 0.0 * self.unused


def test_validation_record_holds_the_health_of_the_non_flipped_heatmaps(tmp_path):
    root = tmp_path / "synthetic"
    train = synthetic_set(root)
    val, ann = synthetic_val_set(root)
    settings = TrainerSettings(epochs=1, batch_size=4, num_workers=0, max_steps_per_epoch=1,
                               log_every=1)  # fmt: skip
    run = tmp_path / "run"
    validation = Validation(val, DotCodec(INPUT, HEATMAP), CocoKeypointEvaluator(ann, str(run)),
                            flip_perm=COCO.flip_permutation())  # fmt: skip
    fit(
        FixedHeatmaps(), SinkhornMatchingLoss(), train, OptimizerSettings(torch.optim.SGD, lr=1.0),
        settings, RunFolder(run), torch.device("cpu"), validation,
    )  # fmt: skip
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val/AP" in record  # the existing keys stay
    # The flip test's averaged maps would move mass out of the top pixel; the plain ones do not.
    assert record["val/dead_share"] == pytest.approx(DEAD / 17)
    assert record["val/top_mass"] == pytest.approx(0.5)
    assert record["val/window_mass"] == pytest.approx(1.0)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for tag, want in (("val/dead_share", DEAD / 17), ("val/top_mass", 0.5),
                      ("val/window_mass", 1.0)):  # fmt: skip
        (scalar,) = events.Scalars(tag)
        assert scalar.step == 1 and scalar.value == pytest.approx(want)


def test_image_to_heatmap_inverts_the_crop_and_applies_the_stride():
    # Input -> image: x_img = 2 x_in + 10, y_img = 2 y_in + 20 (a 2x zoom-out crop); heatmap =
    # input / 4. So 1 image px is 1/8 heatmap px.
    inverse = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]]])
    linear = image_to_heatmap(inverse, (0.25, 0.25))
    assert torch.allclose(linear, torch.tensor([[[0.125, 0.0], [0.0, 0.125]]], dtype=torch.float64))
    # A crop rotated by 90 degrees: input x runs along image y.
    inverse = torch.tensor([[[0.0, -1.0, 5.0], [1.0, 0.0, 7.0]]])
    linear = image_to_heatmap(inverse, (0.25, 0.5))
    error = linear[0] @ torch.tensor([1.5, 0.0], dtype=torch.float64)  # 1.5 image px along x
    assert torch.allclose(error, torch.tensor([0.0, -0.75], dtype=torch.float64))
