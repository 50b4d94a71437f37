"""The matching loss against POT (float64, log-domain Sinkhorn) and hand-worked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from posematch.losses.sinkhorn import SinkhornMatchingLoss, sinkhorn_matching_loss
from tests.conftest import demanders_reference, pixel_centres

pytestmark = pytest.mark.usefixtures("backend")  # tests/losses/conftest.py: both solvers


def pot_value(heatmap: np.ndarray, dot: np.ndarray, mode: str, reg: float, **kw) -> float:
    """<C, P> with P from POT's log-domain Sinkhorn, suppliers relu(H)/sum, in float64."""
    h, w = heatmap.shape
    a = np.maximum(heatmap.ravel(), 0)
    a = a / a.sum() if a.sum() > 0 else np.full(h * w, 1.0 / (h * w))
    pos, masses = demanders_reference(dot, mode)
    keep = masses > 0
    cost = np.linalg.norm(pixel_centres(h, w)[:, None, :] - pos[None, keep], axis=-1)
    kw = {"numItermax": 100000, "stopThr": 1e-14} | kw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(a, masses[keep], cost, reg, method="sinkhorn_log", **kw)
    return float((plan * cost).sum())


def random_problem(rng, b=2, k=3, h=7, w=5, margin=0.0):
    heat = rng.uniform(0.05, 1.0, size=(b, k, h, w))
    dots = rng.uniform(margin, 1.0 - margin, size=(b, k, 2)) * np.array([w - 1, h - 1])
    return torch.tensor(heat), torch.tensor(dots)


@pytest.mark.parametrize("mode", ["subpixel", "naive"])
@pytest.mark.parametrize("reg", [0.5, 1.0, 2.0])
def test_values_match_pot_float64(rng, mode, reg):
    heat, dots = random_problem(rng)
    heat[0, 1] -= 0.5  # some negative pixels: relu must drop them
    got = sinkhorn_matching_loss(heat, dots, reg=reg, tol=1e-13, demanders=mode)
    for b in range(2):
        for k in range(3):
            ref = pot_value(heat[b, k].numpy(), dots[b, k].numpy(), mode, reg)
            assert got[b, k].item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_iterates_equal_pot_after_n_iterations(rng, n):
    heat, dots = random_problem(rng, b=1, k=2)
    got = sinkhorn_matching_loss(heat, dots, reg=0.7, max_iters=n, tol=0.0)
    for k in range(2):
        ref = pot_value(heat[0, k].numpy(), dots[0, k].numpy(), "subpixel", 0.7, numItermax=n)
        ref_stopThr0 = pot_value(
            heat[0, k].numpy(), dots[0, k].numpy(), "subpixel", 0.7, numItermax=n, stopThr=0.0
        )
        assert ref == pytest.approx(ref_stopThr0, rel=1e-14)
        assert got[0, k].item() == pytest.approx(ref, rel=1e-12)


def test_stops_on_tolerance_and_reports_iterations(rng):
    heat, dots = random_problem(rng)
    _, loose = sinkhorn_matching_loss(heat, dots, tol=1e-3, return_iters=True)
    _, tight = sinkhorn_matching_loss(heat, dots, tol=1e-13, return_iters=True)
    _, capped = sinkhorn_matching_loss(heat, dots, tol=0.0, max_iters=37, return_iters=True)
    assert 1 <= loose < tight < 37
    assert capped == 37


def test_each_problem_stops_on_its_own_error_whatever_its_batch(rng):
    # 7 problems (an odd count) that need 13 to 27 scalings at reg 0.25. Each one's value in the
    # batch must equal its value alone, where its own error alone decides when it stops.
    heat, dots = random_problem(rng, b=1, k=7, h=12, w=10)
    heat[0, :3] = heat[0, :3] ** 8
    options = {"reg": 0.25, "tol": 1e-6, "return_iters": True}
    alone = [
        sinkhorn_matching_loss(heat[:, k : k + 1], dots[:, k : k + 1], **options) for k in range(7)
    ]
    batch, iters = sinkhorn_matching_loss(heat, dots, **options)
    assert len({n for _, n in alone}) > 1  # they stop at different scalings
    assert iters == max(n for _, n in alone)
    torch.testing.assert_close(batch[0], torch.cat([v[0] for v, _ in alone]), rtol=1e-12, atol=0)


@pytest.mark.parametrize("mode", ["subpixel", "naive"])
@pytest.mark.parametrize("reg", [0.5, 1.0, 3.0])
def test_gradcheck_implicit_gradient(rng, mode, reg):
    heat, dots = random_problem(rng, b=1, k=2, h=5, w=4, margin=0.1)
    heat.requires_grad_(True)
    weights = torch.tensor([[1.0, 0.5]], dtype=torch.float64)

    def f(x):
        return sinkhorn_matching_loss(x, dots, weights, reg=reg, tol=1e-14, demanders=mode)

    assert torch.autograd.gradcheck(f, (heat,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradient_equals_pot_unrolled_autograd(rng):
    """POT's torch backend differentiates through all iterations: an independent gradient."""
    heat, dots = random_problem(rng, b=1, k=1, h=6, w=5)
    heat.requires_grad_(True)
    sinkhorn_matching_loss(heat, dots, tol=1e-14).sum().backward()

    ref_heat = heat.detach().clone().requires_grad_(True)
    a = torch.relu(ref_heat[0, 0]).flatten()
    a = a / a.sum()
    pos, masses = demanders_reference(dots[0, 0].numpy(), "subpixel")
    cost = torch.cdist(torch.tensor(pixel_centres(6, 5)), torch.tensor(pos))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(
            a, torch.tensor(masses), cost, 1.0, method="sinkhorn_log", numItermax=3000, stopThr=0
        )
    (plan * cost).sum().backward()
    torch.testing.assert_close(heat.grad, ref_heat.grad, rtol=1e-7, atol=1e-10)


def test_float32_matches_float64_and_converges_in_few_iterations(rng):
    heat, dots = random_problem(rng, b=4, k=17, h=64, w=48)
    ref = sinkhorn_matching_loss(heat, dots, tol=1e-13)
    got, iters = sinkhorn_matching_loss(heat.float(), dots.float(), return_iters=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)
    assert iters <= 20


def test_float32_converges_on_large_heatmaps(rng):
    heat, dots = random_problem(rng, b=1, k=4, h=128, w=128)
    _, iters = sinkhorn_matching_loss(heat.float(), dots.float(), return_iters=True)
    assert iters <= 30


def test_far_corner_does_not_underflow_in_float32():
    """All mass at (0, 0), dot at the far corner of a 96x72 map: about 118 px of transport."""
    heat = torch.zeros(1, 1, 96, 72)
    heat[0, 0, 0, 0] = 1.0
    dot = torch.tensor([[[70.6, 94.3]]])
    got = sinkhorn_matching_loss(heat, dot)
    ref = pot_value(heat[0, 0].double().numpy(), dot[0, 0].double().numpy(), "subpixel", 1.0)
    assert ref > 117
    assert got.item() == pytest.approx(ref, rel=1e-6)
    heat.requires_grad_(True)
    sinkhorn_matching_loss(heat, dot).sum().backward()
    assert torch.isfinite(heat.grad).all()


def test_one_by_one_heatmap_is_the_distance_to_the_demanders():
    # Single supplier at (0, 0); dot (0.5, 0): demanders (0, 0) and (1, 0) of mass 1/2 each.
    got = sinkhorn_matching_loss(torch.ones(1, 1, 1, 1), torch.tensor([[[0.5, 0.0]]]))
    assert got.item() == pytest.approx(0.5, abs=1e-7)
    # Naive: the dot (0.5, 0.25) lies in pixel (0, 1) -> one demander at distance 1.
    got = sinkhorn_matching_loss(
        torch.ones(1, 1, 1, 1), torch.tensor([[[0.5, 0.25]]]), demanders="naive"
    )
    assert got.item() == pytest.approx(1.0, abs=1e-7)


def test_dot_on_pixel_centre_is_the_mean_distance():
    # A dot exactly on a centre has one demander of mass 1: <C, P> = sum_i a_i |p_i - dot|.
    heat = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]])
    got = sinkhorn_matching_loss(heat, torch.tensor([[[1.0, 1.0]]]))
    expected = (1 * math.sqrt(2) + 3 * 1 + 0 + 4 * 0) / 8
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dot_on_the_border_matches_pot(rng):
    heat, _ = random_problem(rng, b=1, k=3, h=6, w=5)
    dots = torch.tensor([[[4.0, 5.0], [4.0, 2.3], [-0.4, 5.2]]], dtype=torch.float64)
    got = sinkhorn_matching_loss(heat, dots, tol=1e-13)
    for k in range(3):
        ref = pot_value(heat[0, k].numpy(), dots[0, k].numpy(), "subpixel", 1.0)
        assert got[0, k].item() == pytest.approx(ref, rel=1e-10)


def test_heatmap_without_positive_mass_uses_uniform_suppliers_and_zero_gradient():
    heat = -torch.rand(1, 1, 5, 4, dtype=torch.float64).requires_grad_(True)
    heat.retain_grad()
    dot = torch.tensor([[[1.25, 2.5]]], dtype=torch.float64)
    got = sinkhorn_matching_loss(heat, dot, tol=1e-13)
    ref = pot_value(np.zeros((5, 4)), dot[0, 0].numpy(), "subpixel", 1.0)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    got.sum().backward()
    assert torch.equal(heat.grad, torch.zeros_like(heat))


def test_zero_weight_gives_zero_value_and_gradient_even_with_nan_keypoints(rng):
    heat, dots = random_problem(rng, b=1, k=2)
    dots[0, 1] = float("nan")
    heat.requires_grad_(True)
    weights = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    got = sinkhorn_matching_loss(heat, dots, weights)
    assert got[0, 1].item() == 0.0 and torch.isfinite(got).all()
    got.sum().backward()
    assert torch.isfinite(heat.grad).all()
    assert torch.equal(heat.grad[0, 1], torch.zeros_like(heat.grad[0, 1]))
    assert heat.grad[0, 0].abs().sum() > 0


def test_huge_logits_are_scale_invariant():
    rng = np.random.default_rng(3)
    base = torch.tensor(rng.uniform(0, 1, size=(1, 2, 8, 6)), dtype=torch.float32)
    dots = torch.tensor([[[2.3, 4.1], [0.2, 7.0]]])
    ref = sinkhorn_matching_loss(base, dots)
    for scale in (1e20, 1e36):  # sum(relu(H)) would overflow float32 at 1e36
        huge = (base * scale).requires_grad_(True)
        got = sinkhorn_matching_loss(huge, dots)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
        got.sum().backward()
        assert torch.isfinite(huge.grad).all()


def test_low_precision_input_under_autocast_is_computed_in_float32(rng):
    heat, dots = random_problem(rng, b=2, k=3, h=16, w=12)
    heat_bf16 = heat.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sinkhorn_matching_loss(heat_bf16, dots.float())
    assert got.dtype == torch.float32
    ref = sinkhorn_matching_loss(heat_bf16.detach().double(), dots, tol=1e-13)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)
    got.sum().backward()
    assert heat_bf16.grad.dtype == torch.bfloat16 and torch.isfinite(heat_bf16.grad.float()).all()


def test_module_reduction_sums_joints_and_averages_batch(rng):
    heat, dots = random_problem(rng)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 1.0]], dtype=torch.float64)
    per_joint = sinkhorn_matching_loss(heat, dots, tol=1e-13)
    module = SinkhornMatchingLoss(tol=1e-13)
    got = module(heat, dots, weights)
    assert got.item() == pytest.approx((per_joint * weights).sum().item() / 2, rel=1e-12)
    out = module.with_stats(heat, dots, weights)
    assert out.value.item() == got.item() and out.stats["sinkhorn_iters"] >= 1
    assert vars(module) == vars(SinkhornMatchingLoss(tol=1e-13))  # stateless: options only


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("reg", {"reg": 0.0}),
        ("reg", {"reg": -1.0}),
        ("max_iters", {"max_iters": 0}),
        ("tol", {"tol": -1e-3}),
        ("demanders", {"demanders": "bilinear"}),
        ("reduction", {"reduction": "mean"}),
        ("pixel_size", {"pixel_size": 0.0}),
        ("dead_grad", {"dead_grad": -0.1}),
        ("dead_grad", {"dead_grad": 2.0}),
    ],
)
def test_bad_options_name_the_option(option, kwargs):
    with pytest.raises(ValueError, match=option):
        SinkhornMatchingLoss(**kwargs)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="keypoints"):
        sinkhorn_matching_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="weights"):
        sinkhorn_matching_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 2), torch.ones(2))


def test_tol_zero_runs_exactly_max_iters_in_float32(rng):
    # The float32 tolerance floor stops a converged problem after a handful of scalings; tol=0 must
    # not be raised to it, so that an iteration sweep (the paper's Table 5) changes the computation.
    heat, dots = random_problem(rng, h=16, w=12)
    heat, dots = heat.float(), dots.float()
    _, early = sinkhorn_matching_loss(heat, dots, tol=1e-9, max_iters=1000, return_iters=True)
    assert early < 20
    for n in (1, 50, 500):
        _, iters = sinkhorn_matching_loss(heat, dots, tol=0.0, max_iters=n, return_iters=True)
        assert iters == n
    module = SinkhornMatchingLoss(tol=0.0, max_iters=123)
    assert module.with_stats(heat, dots).stats == {"sinkhorn_iters": 123.0}


@pytest.mark.parametrize("pixel_size", [1.0, 4.0])
def test_pixel_size_measures_cost_and_reg_in_input_pixels(rng, pixel_size):
    # Cost in input pixels = pixel_size x the heatmap-pixel distance, reg in the same unit: POT
    # solved on that scaled cost in float64 is the independent reference.
    heat, dots = random_problem(rng, b=1, k=2)
    got = sinkhorn_matching_loss(heat, dots, reg=1.0, tol=1e-13, pixel_size=pixel_size)
    h, w = heat.shape[-2:]
    for k in range(2):
        a = heat[0, k].numpy().ravel()
        a = a / a.sum()
        pos, masses = demanders_reference(dots[0, k].numpy(), "subpixel")
        keep = masses > 0
        cost = pixel_size * np.linalg.norm(pixel_centres(h, w)[:, None] - pos[None, keep], axis=-1)
        plan = ot.sinkhorn(a, masses[keep], cost, 1.0, method="sinkhorn_log", stopThr=1e-14,
                           numItermax=100000)  # fmt: skip
        assert got[0, k].item() == pytest.approx(float((plan * cost).sum()), rel=1e-9)


def test_input_pixel_reg_leaves_a_sharper_optimum():
    # A heatmap whose mass sits on the four demanders (the ideal prediction) costs less, relative
    # to the cost of the same mass one pixel off, when the blur (reg) is a quarter of a pixel.
    dot = torch.tensor([[[3.25, 2.5]]], dtype=torch.float64)
    ideal = torch.zeros(1, 1, 6, 8, dtype=torch.float64)
    ideal[0, 0, 2, 3], ideal[0, 0, 2, 4], ideal[0, 0, 3, 3], ideal[0, 0, 3, 4] = (
        0.375,
        0.125,
        0.375,
        0.125,
    )
    off = torch.roll(ideal, 1, dims=-1)
    ratio = {}
    for g in (1.0, 4.0):
        pair = [
            sinkhorn_matching_loss(x, dot, tol=1e-13, pixel_size=g).item() for x in (ideal, off)
        ]
        ratio[g] = pair[0] / pair[1]
    assert ratio[4.0] < ratio[1.0]


def test_dead_grad_keeps_the_value_and_revives_a_dead_heatmap():
    heat = -torch.rand(1, 1, 6, 5, dtype=torch.float64) - 0.1
    dot = torch.tensor([[[1.0, 4.0]]], dtype=torch.float64)
    values = []
    for slope in (0.0, 0.1):
        x = heat.clone().requires_grad_(True)
        value = sinkhorn_matching_loss(x, dot, tol=1e-13, dead_grad=slope)
        value.sum().backward()
        values.append(value.item())
        grad = x.grad[0, 0]
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    # Gradient descent must raise the pixel holding the dot and lower the farthest corner.
    assert grad[4, 1] < 0 < grad[0, 4]
    assert grad.sum().item() == pytest.approx(0.0, abs=1e-12)  # centred: no global shift


def test_dead_grad_reaches_negative_pixels_of_a_live_heatmap():
    heat = torch.full((1, 1, 5, 5), -1.0, dtype=torch.float64)
    heat[0, 0, 0, 0] = 1.0  # the only positive pixel, far from the dot
    dot = torch.tensor([[[3.0, 3.0]]], dtype=torch.float64)
    grads = []
    for slope in (0.0, 0.5):
        x = heat.clone().requires_grad_(True)
        sinkhorn_matching_loss(x, dot, tol=1e-13, dead_grad=slope).sum().backward()
        grads.append(x.grad[0, 0])
    assert grads[0][3, 3] == 0.0  # the paper's relu: no gradient below zero
    assert grads[1][3, 3] < 0  # the surrogate raises the pixel on the dot


def test_two_forwards_before_their_backwards_keep_their_own_gradients(rng):
    # The loss keeps its scratch tensors from call to call: nothing a call returns or saves for
    # its backward may live in them.
    first, dots_1 = random_problem(rng, b=2, k=3, h=9, w=7)
    second, dots_2 = random_problem(rng, b=3, k=3, h=9, w=7)
    grads = []
    for heat, dots in ((first, dots_1), (second, dots_2)):
        x = heat.clone().requires_grad_(True)
        sinkhorn_matching_loss(x, dots, tol=1e-12).sum().backward()
        grads.append(x.grad)
    xs = [first.clone().requires_grad_(True), second.clone().requires_grad_(True)]
    pairs = zip(xs, (dots_1, dots_2), strict=True)
    values = [sinkhorn_matching_loss(x, d, tol=1e-12) for x, d in pairs]
    values[1].sum().backward()
    values[0].sum().backward()
    for x, grad in zip(xs, grads, strict=True):
        torch.testing.assert_close(x.grad, grad, rtol=1e-12, atol=0)
