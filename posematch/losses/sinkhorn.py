"""The heatmap distribution-matching loss (Qu et al., NeurIPS 2022, Sec. 3).

For each joint the predicted heatmap H (h x w) becomes suppliers a = relu(H) / sum(relu(H)), one per
pixel centre (x=j, y=i); the ground-truth dot becomes demanders b (see ``posematch.demanders``). The
cost C is the Euclidean distance in heatmap pixels, and the loss is <C, P> where P is the entropic
optimal-transport plan between a and b with regularisation ``reg`` (Cuturi 2013), found by Sinkhorn.

How it is computed, and why:
- All B*K problems run as one batch. Because each problem has at most 4 demanders lying within
  sqrt(2) px of each other, the kernel is stabilised per supplier row: K~_ij = exp(-(C_ij - min_j
  C_ij) / reg) lies in [exp(-sqrt(2)/reg), 1], so nothing underflows however far the mass is from the
  dot (a plain kernel exp(-C/reg) underflows in float32 beyond ~87 px). The row factor cancels
  because every iteration ends with the row marginals exact: P_ij = a_i K~_ij v_j / sum_j' K~_ij' v_j'.
  This is the log-domain Sinkhorn in closed form, at the cost of two small products per iteration.
  How it is made fast sits behind one call, ``posematch.losses.solver.transport_costs``: on a CPU
  the scalings and the gradient run in a fused C++ op, one problem at a time with its kernel in
  cache; batched torch ops on CUDA and as the fallback.
- Iteration semantics follow POT's ``ot.sinkhorn``: the same iterates from the same start (u = 1,
  then v = b / K^T u, u = a / K v, ...), so that after n iterations the plan equals POT's after
  ``numItermax=n``; each joint's problem stops when its column-marginal error ||P^T 1 - b||_2
  (rows are exact) is below ``tol``, or after ``max_iters`` iterations, so its value does not
  depend on the batch it is in. The error is checked after every iteration (POT checks after
  iterations 1, 11, 21, ..., so it may run up to 9 more). A float32 column sum over thousands of pixels
  is only good to ~1e-6 (the error stalls there on 64x48 maps), so in float32 the
  tolerance is raised to ``FLOAT32_TOL_FLOOR`` = 1e-5 instead of silently running every iteration;
  1e-5 is reached in about 5-7 scalings at reg = 1 and leaves the value within ~1e-6 relative.
  ``tol=0`` switches the test off: exactly ``max_iters`` scalings run, in any dtype (the paper's
  Table 5 varies the iteration count; with a tolerance every count above ~10 gives the same plan).
- The unit of the cost (and of ``reg``) is ``pixel_size`` per heatmap pixel: 1 (default) measures in
  heatmap pixels; the stride (4 for HRNet / SimpleBaseline) measures in input-image pixels, the
  reading of the paper's demanders written with a pixel size g. With cost C' = g C and reg', the plan
  is the one of cost C and reg' / g, and the value is g times its cost, so only reg / g shapes it.
- The gradient is not unrolled through the iterations. At the fixed point P_ij = a_i Q_ij(g) with
  Q_i = softmax((g - C_i) / reg) and sum_i a_i Q_i(g) = b; implicit differentiation gives
  dL/da_i = sum_j Q_ij (C_ij - lambda_j), where lambda solves the M x M system
  (diag(P^T 1) - Q^T diag(a) Q) lambda = sum_i a_i Q_i (C_i - <Q_i, C_i>) on the active demanders
  (the constant direction, a gauge freedom of g, is pinned). Memory is that of one iteration.
- Always computed in float32 (or float64 when given float64), with autocast disabled.

Defined results for degenerate input (never NaN or inf for finite heatmaps):
- weight 0: the value is 0 and so is the gradient; the joint's keypoint may be anything (NaN too).
- a heatmap with no positive value: the suppliers are uniform over the pixels, the value is the
  transport cost from that uniform mass, and the gradient is 0 (relu has no slope there).
- huge logits: the heatmap is divided by its maximum before normalising, so no overflow.
- a 1 x 1 heatmap: a single supplier; the value is its distance to the demanders.
- a dot on or beyond the border: demanders are points in the plane, so the cost is still defined.
Non-finite heatmap values are outside the domain and give NaN, so that training stops on them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posematch.demanders import check_mode, make_demanders
from posematch.losses.mass_terms import check_weights, mass_terms
from posematch.losses.solver import transport_costs
from posematch.types import LossOutput

FLOAT32_TOL_FLOOR = 1e-5
REDUCTIONS = ("none", "sum", "batchmean")


def _check_options(
    reg: float,
    max_iters: int,
    tol: float,
    reduction: str,
    demanders: str,
    pixel_size: float,
    dead_grad: float,
) -> None:
    if not (isinstance(reg, (int, float)) and math.isfinite(reg) and reg > 0):
        raise ValueError(f"reg={reg!r}: the entropic regularisation must be a positive number")
    if not (isinstance(pixel_size, (int, float)) and math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(
            f"pixel_size={pixel_size!r}: the size of a heatmap pixel in the cost's unit must be a "
            "positive number (1 = heatmap pixels, the stride = input-image pixels)"
        )
    if not (isinstance(dead_grad, (int, float)) and 0 <= dead_grad <= 1):
        raise ValueError(f"dead_grad={dead_grad!r}: the surrogate slope must be in [0, 1]")
    if not (isinstance(max_iters, int) and max_iters >= 1):
        raise ValueError(f"max_iters={max_iters!r}: must be a positive integer")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol={tol!r}: must be a non-negative number")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}")
    check_mode(demanders)


def sinkhorn_matching_loss(
    heatmaps: torch.Tensor,
    keypoints: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    reg: float = 1.0,
    max_iters: int = 1000,
    tol: float = 1e-9,
    demanders: str = "subpixel",
    reduction: str = "none",
    pixel_size: float = 1.0,
    dead_grad: float = 0.0,
    mass_weight: float = 0.0,
    mass_target: float = 1.0,
    tv_weight: float = 0.0,
    return_iters: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Distribution-matching loss between predicted heatmaps and ground-truth dots.

    Args:
        heatmaps: (B, K, h, w) predicted heatmaps, any float dtype (computed in float32, or float64
            when given float64, autocast disabled).
        keypoints: (B, K, 2) ground-truth dots (x, y) in heatmap pixels.
        weights: (B, K) joint weights (0 = ignore); default all ones.
        reg: entropic regularisation, in the unit of the cost (see ``pixel_size``).
        max_iters: the most Sinkhorn scalings.
        tol: stopping threshold on the L2 column-marginal error (raised to ``FLOAT32_TOL_FLOOR`` in
            float32, where smaller errors are not representable); 0 runs exactly ``max_iters``.
        demanders: ``"subpixel"`` (4 bilinear demanders, the paper's default) or ``"naive"``.
        reduction: ``"none"`` -> (B, K) weights * <C, P>; ``"sum"`` -> scalar sum of those;
            ``"batchmean"`` -> their sum over joints, mean over the batch.
        pixel_size: size of one heatmap pixel in the unit of the cost and of ``reg``: 1 = heatmap
            pixels (default), the stride (e.g. 4) = input-image pixels.
        dead_grad: surrogate gradient slope for heatmap values <= 0 (see
            ``suppliers_from_heatmaps``); 0 = the paper's relu.
        mass_weight, mass_target, tv_weight: DM-Count's regularisers added per joint
            (``posematch.losses.mass_terms``): mass_weight * |sum relu(H) - mass_target| +
            tv_weight * sum |S - D|, unitless (not scaled by ``pixel_size``); 0 (default) = the
            paper's loss alone.
        return_iters: also return the number of Sinkhorn scalings run (the most any joint ran).

    Returns:
        The loss in the cost's unit (float32 or float64), plus the unitless regularisers when
        they are on, and the iterations when asked.
    """
    _check_options(reg, max_iters, tol, reduction, demanders, pixel_size, dead_grad)
    check_weights(mass_weight, mass_target, tv_weight)
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps: expected (B, K, h, w), got shape {tuple(heatmaps.shape)}")
    bsz, k, h, w = heatmaps.shape
    if keypoints.shape != (bsz, k, 2):
        raise ValueError(f"keypoints: expected shape {(bsz, k, 2)}, got {tuple(keypoints.shape)}")
    if weights is not None and weights.shape != (bsz, k):
        raise ValueError(f"weights: expected shape {(bsz, k)}, got {tuple(weights.shape)}")

    dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    if dtype == torch.float32 and tol > 0:
        tol = max(tol, FLOAT32_TOL_FLOOR)
    with torch.autocast(device_type=heatmaps.device.type, enabled=False):
        heatmaps = heatmaps.to(dtype)
        weights = (
            torch.ones(bsz, k, dtype=dtype, device=heatmaps.device)
            if weights is None
            else weights.to(dtype)
        )
        # Ignored joints may carry any coordinates (even NaN); park their dot on the grid.
        used = weights != 0
        dots = torch.where(used.unsqueeze(-1), keypoints.to(dtype), 0.0).detach()
        positions, masses = make_demanders(dots, demanders)  # (B, K, M, 2), (B, K, M)
        masses = torch.where(masses > torch.finfo(dtype).tiny, masses, 0.0)
        # Suppliers a = relu(H) / sum relu(H), the plan P between a and the demanders, and <C, P>,
        # all behind one call (posematch.losses.solver). Solved in heatmap pixels: the plan depends
        # on reg / pixel_size only (module docstring).
        value, iters = transport_costs(
            heatmaps.reshape(bsz * k, h, w),
            positions.reshape(bsz * k, -1, 2),
            masses.reshape(bsz * k, -1),
            reg / pixel_size,
            max_iters,
            float(tol),
            dead_grad,
        )
        value = value.reshape(bsz, k) * pixel_size
        if mass_weight > 0 or tv_weight > 0:
            value = value + mass_terms(
                heatmaps,
                dots,
                mass_weight=mass_weight,
                mass_target=mass_target,
                tv_weight=tv_weight,
                demanders=demanders,
            )
        value = torch.where(used, value * weights, 0.0)

    if reduction == "sum":
        value = value.sum()
    elif reduction == "batchmean":
        value = value.sum() / bsz
    return (value, iters) if return_iters else value


class SinkhornMatchingLoss(nn.Module):
    """The distribution-matching loss as a module for configs: sum over joints, mean over the batch.

    ``forward(heatmaps (B, K, h, w), keypoints (B, K, 2) heatmap px, weights (B, K))`` returns a
    scalar in the cost's unit (heatmap pixels times ``pixel_size``); ``with_stats`` returns it with
    the Sinkhorn scalings run (``sinkhorn_iters``, the most any joint ran). The module holds options
    only: no state changes between calls.
    """

    target_kind = "dots"  # consumes DotCodec targets
    # Suppliers are relu(H) / sum relu(H): a heatmap with no positive value has no gradient, so
    # training watches for dead heatmaps (posematch.engine.guard).
    normalises_relu = True

    def __init__(
        self,
        reg: float = 1.0,
        max_iters: int = 1000,
        tol: float = 1e-9,
        demanders: str = "subpixel",
        reduction: str = "batchmean",
        pixel_size: float = 1.0,
        dead_grad: float = 0.0,
        mass_weight: float = 0.0,
        mass_target: float = 1.0,
        tv_weight: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(reg, max_iters, tol, reduction, demanders, pixel_size, dead_grad)
        check_weights(mass_weight, mass_target, tv_weight)
        self.mass_weight = mass_weight
        self.mass_target = mass_target
        self.tv_weight = tv_weight
        self.pixel_size = pixel_size
        self.dead_grad = dead_grad
        self.reg = reg
        self.max_iters = max_iters
        self.tol = tol
        self.demanders = demanders
        self.reduction = reduction

    def forward(
        self,
        heatmaps: torch.Tensor,
        keypoints: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.with_stats(heatmaps, keypoints, weights).value

    def with_stats(
        self,
        heatmaps: torch.Tensor,
        keypoints: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossOutput:
        """The loss and ``{"sinkhorn_iters": scalings run}``."""
        value, iters = sinkhorn_matching_loss(
            heatmaps,
            keypoints,
            weights,
            reg=self.reg,
            max_iters=self.max_iters,
            tol=self.tol,
            demanders=self.demanders,
            reduction=self.reduction,
            pixel_size=self.pixel_size,
            dead_grad=self.dead_grad,
            mass_weight=self.mass_weight,
            mass_target=self.mass_target,
            tv_weight=self.tv_weight,
            return_iters=True,
        )
        return LossOutput(value, {"sinkhorn_iters": float(iters)})

    def extra_repr(self) -> str:
        return (
            f"reg={self.reg}, max_iters={self.max_iters}, tol={self.tol}, "
            f"demanders={self.demanders!r}, reduction={self.reduction!r}, "
            f"pixel_size={self.pixel_size}, dead_grad={self.dead_grad}, "
            f"mass_weight={self.mass_weight}, mass_target={self.mass_target}, "
            f"tv_weight={self.tv_weight}"
        )
