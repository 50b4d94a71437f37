"""Optimizer construction: the model's own parameters, no-decay groups, lr scaled to the batch."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from posematch.engine.optim import OptimizerSettings


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.proj = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_no_decay_names_get_their_own_group_and_frozen_parameters_none():
    model = Attention()
    settings = OptimizerSettings(
        partial(torch.optim.AdamW, weight_decay=0.01), lr=5e-4,
        no_decay=("relative_position_bias_table",),
    )  # fmt: skip
    opt = settings.build(model, global_batch=32)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert [id(p) for p in opt.param_groups[0]["params"]] == [
        id(model.proj.weight), id(model.proj.bias)]  # fmt: skip
    assert [id(p) for p in opt.param_groups[1]["params"]] == [
        id(model.relative_position_bias_table)]  # fmt: skip
    assert all(g["lr"] == 5e-4 for g in opt.param_groups)  # no base_batch: no scaling


def test_lr_scales_linearly_with_the_global_batch():
    settings = OptimizerSettings(torch.optim.Adam, lr=1e-3, base_batch=256)
    assert settings.lr_for(64) == pytest.approx(2.5e-4)
    assert settings.lr_for(512) == pytest.approx(2e-3)
    opt = settings.build(nn.Linear(2, 2), global_batch=128)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert len(opt.param_groups) == 1  # nothing matched a no-decay key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, r"optim.optimizer.lr=0.0: must be a positive"),
        ({"lr": float("nan")}, r"optim.optimizer.lr=nan"),
        ({"lr": "abc"}, r"optim.optimizer.lr='abc': not a number"),
        ({"lr": 1e-3, "base_batch": 0}, r"optim.base_batch=0"),
    ],
)
def test_bad_settings_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSettings(torch.optim.Adam, **kwargs)


def test_lr_mult_gives_a_prefix_its_own_rate_which_the_schedules_scale_alike():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    head = nn.Sequential()
    head.add_module("final_layer", nn.Linear(2, 1))
    model.add_module("head", head)
    schedule = partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1], gamma=0.1)
    settings = OptimizerSettings(torch.optim.SGD, lr=0.5, schedule=schedule,
                                 lr_mult={"head.final_layer": 0.01})  # fmt: skip
    opt = settings.build(model, 1)
    by_id = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_id[id(model.backbone.weight)] == 0.5
    assert by_id[id(model.head.final_layer.weight)] == pytest.approx(0.005)
    assert by_id[id(model.head.final_layer.bias)] == pytest.approx(0.005)
    sched = settings.schedule(opt)
    opt.step()
    sched.step()
    lrs = sorted(g["lr"] for g in opt.param_groups if g["params"])
    assert lrs == pytest.approx([0.0005, 0.05])
    with pytest.raises(ValueError, match="no parameter name starts with"):
        OptimizerSettings(torch.optim.SGD, lr=0.5, lr_mult={"head.nothing": 2.0}).build(model, 1)
    with pytest.raises(ValueError, match=r"optim\.lr_mult\.head"):
        OptimizerSettings(torch.optim.SGD, lr=0.5, lr_mult={"head": 0.0})
