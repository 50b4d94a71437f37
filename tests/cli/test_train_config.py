"""The real training config composes for every experiment, and mistakes name the option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate

from posematch.cli.train import build
from posematch.keypoints import COCO
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


# The conventional ImageNet files of each paper model (HRNet README's models/pytorch/imagenet tree,
# HRFormer's classification release), under data/pretrained/ as the README lays it out.
IMAGENET_FILES = {
    "hrnet_w32": "hrnet_w32-36af842e.pth",
    "hrnet_w48": "hrnet_w48-8ef0771d.pth",
    "simplebaseline_r152": "resnet152-b121ed2d.pth",
    "hrformer_base": "hrt_base.pth",
}


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith(("coco/", "mpii/"))])
def test_paper_experiments_start_from_imagenet_and_stop_without_the_file(experiment, tmp_path):
    model_name = re.match(r"^\w+/(\w+?)_\d+x\d+_", experiment).group(1)
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.model.pretrained == f"data/pretrained/{IMAGENET_FILES[model_name]}"
    missing = tmp_path / IMAGENET_FILES[model_name]
    cfg = _compose([f"experiment={experiment}", f"model.pretrained={missing}"])
    with pytest.raises(InstantiationException, match=re.escape(str(missing))) as err:
        instantiate(cfg.model)
    assert "model.pretrained=none" in str(err.value)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates_its_model_loss_and_codec(experiment):
    # From scratch: the ImageNet files are not part of the repository (test above, slow test).
    cfg = _compose([f"experiment={experiment}", "model.pretrained=none"])
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
    assert len(parts["train_set"]) > 0
    # The test group's flip and shift reach validation.
    validation = parts["validation"]
    assert list(validation.flip_perm) == COCO.flip_permutation() and validation.shift
    assert len(validation.dataset) > 0
    off = build(_compose([*_synthetic_overrides(tmp_path / "s"), "test.flip=false"]))
    assert off["validation"].flip_perm is None
    schedule = parts["optim"].schedule
    assert schedule.func is torch.optim.lr_scheduler.MultiStepLR
    assert schedule.keywords["milestones"] == [170, 200]


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
        # Issue 15: a negative gamma trained with a negative lr (gradient ascent), exit 0.
        ("schedule.gamma=-1", ValueError, "schedule.gamma=-1"),
        ("schedule.milestones=[2.5]", ValueError, r"schedule.milestones=\[2.5\]"),
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


def test_evaluation_loads_no_training_group_unless_an_experiment_names_it():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        plain = compose("evaluate", overrides=["checkpoint=x"])
        demo = compose("evaluate", overrides=["checkpoint=x", "experiment=demo/synthetic_mse"])
    assert not {"loss", "optim", "schedule", "trainer"} & set(plain)
    assert demo.loss._target_ == "posematch.losses.mse.JointsMSELoss"
