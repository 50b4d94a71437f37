"""The real training config composes for every experiment, and mistakes name the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate

from posematch.cli.train import build
from tests.conftest import REPO
from tests.engine.tiny import synthetic_set

EXPERIMENTS = sorted(
    str(p.relative_to(REPO / "conf" / "experiment").with_suffix(""))
    for p in (REPO / "conf" / "experiment").rglob("*.yaml")
)


def _compose(overrides: list[str]):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, "run_dir=/tmp/unused"])


def _synthetic_overrides(root: Path) -> list[str]:
    synthetic_set(root)
    return [
        "data=synthetic",
        f"data.root={root}",
        "data.val.ann_file=${data.train.ann_file}",
        "data.val.image_dir=${data.train.image_dir}",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates_its_model_loss_and_codec(experiment):
    cfg = _compose([f"experiment={experiment}"])
    loss, codec = instantiate(cfg.loss), instantiate(cfg.codec)
    assert loss.target_kind == codec.target_kind
    assert list(codec.geometry.input_size) == list(cfg.data.input_size)
    # The model itself, on the meta device (shapes only, no memory): its heatmaps have the size
    # and joint count the codec encodes, which is what the run's geometry check will demand.
    with torch.device("meta"):
        model = instantiate(cfg.model)
        width, height = cfg.data.input_size
        heatmaps = model(torch.zeros(1, 3, height, width))
    assert list(heatmaps.shape) == [1, cfg.data.num_keypoints, *codec.geometry.heatmap_size[::-1]]


def test_build_makes_every_part_from_the_real_config(tmp_path):
    cfg = _compose([*_synthetic_overrides(tmp_path / "s"), "model=hrnet_small"])
    parts = build(cfg)
    assert len(parts["train_set"]) > 0 and parts["flip_perm"] is not None


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("loss.reg=0", ValueError, "reg=0"),
        ("loss.max_iters=0", ValueError, "max_iters=0"),
        ("trainer.epochs=0", ValueError, "trainer.epochs"),
        ("codec=gaussian", ValueError, "codec=GaussianHeatmapCodec"),
        ("data.train.ann_file=/nonexistent/ann.json", FileNotFoundError, "/nonexistent/ann.json"),
        # Issue 11: each of these trained (or failed deep inside) without naming the option.
        ("data.input_size=[128,160]", ValueError, r"data.heatmap_size=.* makes 32x40 .*\[32, 40\]"),
        ("data.input_size=[100,130]", ValueError, r"data.input_size=\[100, 130\] does not suit"),
        ("optim.optimizer.lr=0", ValueError, "optim.optimizer.lr=0.0: must be a positive"),
        ("trainer.epochs=abc", ValueError, "trainer.epochs='abc'"),
        ("trainer.epochs=2.5", ValueError, "trainer.epochs=2.5"),
    ],
)
def test_config_mistakes_stop_before_training_naming_the_option(tmp_path, override, error, message):
    cfg = _compose([*_synthetic_overrides(tmp_path / "s"), "model=hrnet_small", override])
    # Hydra wraps errors raised inside a constructor, keeping the message and adding the config key.
    with pytest.raises((error, InstantiationException), match=message):
        build(cfg)


def test_unknown_model_is_named():
    with pytest.raises(HydraException, match="nonexistent_net"):
        _compose(["model=nonexistent_net"])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_evaluation_with_the_same_model_and_codec(experiment):
    train = _compose([f"experiment={experiment}"])
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        evaluate = compose("evaluate", overrides=[f"experiment={experiment}", "checkpoint=x"])
    assert evaluate.model == train.model
    assert evaluate.codec == train.codec
    assert evaluate.loss._target_ == train.loss._target_
