"""Batched entropic optimal transport from suppliers to a few demanders: the engine of the matching
loss (``posematch.losses.sinkhorn``, whose docstring derives the stabilisation used here).

``MatchingCost.apply(a, cost, b, reg, max_iters, tol, info)`` returns <C, P> per problem for the
Sinkhorn plan P (``sinkhorn_scalings``, in supplier-stabilised units so nothing underflows), and its
gradient w.r.t. the suppliers at the fixed point (implicit differentiation: one small M x M solve
per problem instead of back-propagating through the iterations). ``info["threads"]``: the
intra-op threads its backward runs on (the caller's choice, ``posematch.losses.threads``).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import FunctionCtx

from posematch.losses.threads import intra_op_threads

SUBPIXEL_SPREAD = math.sqrt(2.0)  # largest distance between two demanders of one dot, px


def sinkhorn_scalings(
    a: torch.Tensor,
    kernel: torch.Tensor,
    row_factor: torch.Tensor,
    b: torch.Tensor,
    max_iters: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run Sinkhorn on a batch of problems with supplier-stabilised kernels.

    Args:
        a: (P, N) supplier masses.
        kernel: (P, M, N) stabilised kernel exp(-(C - min_j C) / reg), entries in (0, 1]. The
            demander axis comes first so that both products below stream over contiguous pixels.
        row_factor: (P, N) exp(-(min_j C - min C) / reg), the supplier factor taken out of K~.
        b: (P, M) demander masses (zeros allowed).
        max_iters: the most demander scalings to run (at least 1).
        tol: stop when every problem's ||P^T 1 - b||_2 is below this.

    Returns:
        v: (P, M) demander scalings (scale-free: only ratios matter), t = v K~ (P, N) at that v, and
        the number of scalings run.
    """
    # POT's first scaling, v = b / (K^T 1), in stabilised units: K^T 1 = K~ exp(-min_j C / reg),
    # and the common factor that keeps exp(-min_j C / reg) from underflowing cancels in ratios.
    active = b > 0
    v = torch.where(active, b / torch.bmm(kernel, row_factor.unsqueeze(-1)).squeeze(-1), 0.0)
    v = v / v.amax(dim=-1, keepdim=True)
    iters = 1
    while True:
        t = torch.bmm(v.unsqueeze(1), kernel).squeeze(1)  # (P, N)
        colsum = v * torch.bmm(kernel, (a / t).unsqueeze(-1)).squeeze(-1)  # (P, M)
        if iters >= max_iters or torch.linalg.vector_norm(colsum - b, dim=-1).max() < tol:
            return v, t, iters
        v = torch.where(active, v * b / colsum.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
        # Only ratios of v matter; pinning the largest at 1 keeps K~ v away from under/overflow.
        v = v / v.amax(dim=-1, keepdim=True)
        iters += 1


def _solve(
    a: torch.Tensor,
    cost: torch.Tensor,
    b: torch.Tensor,
    reg: float,
    max_iters: int,
    tol: float,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], int]:
    """<C, P> per problem, the tensors its gradient needs, and the scalings run (see
    ``MatchingCost``)."""
    # Every (P, M, N) pass costs as much as a Sinkhorn iteration, so the work is arranged to
    # touch the big tensors as few times as possible (in-place ops, products as bmm).
    nearest = cost.amin(dim=-2, keepdim=True)
    # Far pixels' factors fall below float32's normal range, where x86 arithmetic on subnormal
    # numbers costs ~100x (their exp, and their products in the first scaling's bmm): they are
    # set to 0 instead, a change far below the rounding of any sum they enter (each holds its
    # nearest pixel's factor, 1). The cut keeps every product with the kernel (>= e^(-sqrt(2)
    # / reg)) a normal number.
    spread = (nearest.amin(dim=-1, keepdim=True) - nearest).squeeze(-2) / reg
    cut = math.log(torch.finfo(cost.dtype).tiny) + SUBPIXEL_SPREAD / reg
    row_factor = spread.masked_fill_(spread < cut, -math.inf).exp_()
    kernel = torch.sub(nearest, cost).mul_(1.0 / reg).exp_()
    if reg < SUBPIXEL_SPREAD / 80.0:  # only then can exp underflow (spread <= sqrt(2) px)
        kernel.clamp_min_(torch.finfo(kernel.dtype).tiny)
    v, t, iters = sinkhorn_scalings(a, kernel, row_factor, b, max_iters, tol)
    q = kernel.mul_(v.unsqueeze(-1)).mul_(t.reciprocal().unsqueeze(-2))  # P = q * a
    colsum = torch.bmm(q, a.unsqueeze(-1)).squeeze(-1)
    qc = cost.mul(q)
    row_cost = qc.sum(dim=-2)  # <Q_i, C_i> per supplier, (P, N)
    demander_cost = torch.bmm(qc, a.unsqueeze(-1)).squeeze(-1)  # sum_i P_ji C_ji, (P, M)
    saved = (a, q, colsum, row_cost, demander_cost, b)
    return demander_cost.sum(dim=-1), saved, iters


class MatchingCost(torch.autograd.Function):
    """<C, P> for batched problems, with the gradient w.r.t. the suppliers at the fixed point.

    Inputs: a (P, N) suppliers, cost (P, M, N) in heatmap pixels, b (P, M) demanders.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        a: torch.Tensor,
        cost: torch.Tensor,
        b: torch.Tensor,
        reg: float,
        max_iters: int,
        tol: float,
        info: dict[str, int | None],
    ) -> torch.Tensor:
        ctx.threads = info.get("threads")  # the caller's choice (None: the process's count)
        value, saved, iters = _solve(a, cost, b, reg, max_iters, tol)
        ctx.save_for_backward(*saved)
        info["iters"] = iters
        return value

    @staticmethod
    def backward(ctx: FunctionCtx, grad_value: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        with intra_op_threads(ctx.threads):
            return MatchingCost._gradient(ctx.saved_tensors, grad_value)

    @staticmethod
    def _gradient(
        saved: tuple[torch.Tensor, ...], grad_value: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        a, q, colsum, row_cost, demander_cost, b = saved
        active = b > 0
        jac = torch.diag_embed(colsum) - torch.bmm(q * a.unsqueeze(-2), q.transpose(-1, -2))
        # sum_i P_ji (C_ji - <Q_i, C_i>), which sums to 0 over j.
        rhs = demander_cost - torch.bmm(q, (a * row_cost).unsqueeze(-1)).squeeze(-1)
        act = active.to(jac.dtype)
        # Pin the gauge (constant shift of g) with 1 1^T on the active demanders, and give inactive
        # demanders (mass 0, empty rows) an identity row so the system stays regular.
        scale = torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1, keepdim=True).clamp_min(1e-12)
        system = (
            jac
            + scale.unsqueeze(-1) * act.unsqueeze(-1) * act.unsqueeze(-2)
            + torch.diag_embed(1.0 - act)
        )
        lam = torch.linalg.solve(system.double(), rhs.double().unsqueeze(-1)).squeeze(-1)
        lam = torch.where(active, lam.to(q.dtype), 0.0)
        grad_a = row_cost - torch.bmm(lam.unsqueeze(1), q).squeeze(1)
        return grad_a * grad_value.unsqueeze(-1), None, None, None, None, None, None
