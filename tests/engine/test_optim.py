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
