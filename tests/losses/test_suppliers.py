"""The suppliers' written-out gradient against autograd through the plain formula (float64)."""

from __future__ import annotations

import pytest
import torch

from posematch.losses.suppliers import suppliers_from_heatmaps


def _plain(x: torch.Tensor) -> torch.Tensor:
    r = torch.relu(x.flatten(2))
    return r / r.sum(dim=-1, keepdim=True)


def test_value_and_gradient_equal_autograd_through_relu_over_sum():
    torch.manual_seed(0)
    heat = torch.randn(2, 3, 5, 4, dtype=torch.float64)  # about half the pixels negative
    upstream = torch.randn(2, 3, 20, dtype=torch.float64)
    x = heat.clone().requires_grad_(True)
    ref = heat.clone().requires_grad_(True)
    got = suppliers_from_heatmaps(x)
    want = _plain(ref)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
    got.backward(upstream)
    want.backward(upstream)
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-12, atol=1e-15)
    assert (x.grad[heat < 0] == 0).all()


def test_dead_grad_slope_below_zero_and_centred_gradient_of_a_dead_heatmap():
    torch.manual_seed(1)
    heat = torch.randn(1, 2, 4, 3, dtype=torch.float64)
    heat[0, 1] = -heat[0, 1].abs() - 0.1  # no positive pixel: uniform suppliers
    upstream = torch.randn(1, 2, 12, dtype=torch.float64)
    x = heat.clone().requires_grad_(True)
    a = suppliers_from_heatmaps(x, dead_grad=0.25)
    torch.testing.assert_close(a[0, 1], torch.full((12,), 1 / 12, dtype=torch.float64))
    a.backward(upstream)
    # Live joint: relu's slope replaced by 0.25 at and below zero, the rest as autograd's.
    ref = heat[0, 0].clone().requires_grad_(True)
    leaky = torch.where(ref > 0, ref, 0.25 * ref - (0.25 * ref).detach())  # value relu, slope 0.25
    (leaky.flatten() / leaky.sum()).backward(upstream[0, 0])
    torch.testing.assert_close(x.grad[0, 0], ref.grad, rtol=1e-12, atol=1e-15)
    # Dead joint: 0.25 (g - mean g).
    g = upstream[0, 1]
    torch.testing.assert_close(x.grad[0, 1].flatten(), 0.25 * (g - g.mean()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_positive_mass_gives_uniform_suppliers_and_no_gradient(dtype):
    x = (-torch.rand(1, 1, 3, 3, dtype=dtype)).requires_grad_(True)
    a = suppliers_from_heatmaps(x)
    assert torch.equal(a, torch.full_like(a, 1 / 9))
    a.backward(torch.randn_like(a))
    assert torch.equal(x.grad, torch.zeros_like(x))
