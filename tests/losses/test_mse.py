"""JointsMSELoss against the official per-joint loop and a hand-worked value."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posematch.losses.mse import JointsMSELoss


def official_joints_mse(output, target, target_weight):
    """The official HRNet loop: 0.5 * MSE(mean) per joint on weighted maps, averaged over joints."""
    criterion = nn.MSELoss(reduction="mean")
    b, k = output.shape[:2]
    preds = output.reshape(b, k, -1).split(1, 1)
    gts = target.reshape(b, k, -1).split(1, 1)
    loss = 0.0
    for idx in range(k):
        w = target_weight[:, idx].unsqueeze(-1)
        loss += 0.5 * criterion(preds[idx].squeeze(1).mul(w), gts[idx].squeeze(1).mul(w))
    return loss / k


def test_matches_official_loop():
    torch.manual_seed(0)
    out, tgt = torch.rand(4, 17, 16, 12), torch.rand(4, 17, 16, 12)
    weight = (torch.rand(4, 17) > 0.3).float()
    got = JointsMSELoss()(out, tgt, weight)
    torch.testing.assert_close(got, official_joints_mse(out, tgt, weight))


def test_hand_worked_value():
    # Joint 0: error 1 everywhere, weight 1; joint 1 weight 0 -> 0.5 * (1 * 6 + 0) / 12 = 0.25.
    got = JointsMSELoss()(
        torch.ones(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.tensor([[1.0, 0.0]])
    )
    assert got.item() == pytest.approx(0.25)


def test_bf16_under_autocast_is_float32():
    out = torch.rand(2, 3, 8, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = JointsMSELoss()(out, torch.zeros(2, 3, 8, 6), torch.ones(2, 3))
    assert got.dtype == torch.float32
