"""Batched entropic optimal transport from the pixels of a heatmap to a few demanders: the engine of
the matching loss (``posematch.losses.sinkhorn``, whose docstring derives the stabilisation used
here).

``MatchingCost.apply(a, positions, b, shape, reg, max_iters, tol, info)`` returns <C, P> per
problem for the Sinkhorn plan P (``sinkhorn_scalings``, in supplier-stabilised units so nothing
underflows) with C the Euclidean distance from each pixel centre to each demander, and its gradient
w.r.t. the suppliers at the fixed point (implicit differentiation: one small M x M solve per problem
instead of back-propagating through the iterations). ``info["threads"]``: the intra-op threads its
backward runs on (the caller's choice, ``posematch.losses.threads``).

On a CPU the scalings and everything after them run in ``fused_solve.cpp`` (built by
``posematch.losses.fused``): the same arithmetic one problem at a time, its kernel in the core's
cache through all its scalings, problems spread over ATen's threads. The batched torch ops below
are the CUDA path and the fallback where the op could not be built; tests run both.

The work touches two (P, M, N) tensors, the cost and the kernel, and computes everything else in
them; both are scratch kept from call to call (``posematch.losses.workspace``: on a CPU a new
block of that size costs its page faults and slower first passes). To let them go at the end of
the forward, the forward also computes the gradient w.r.t. the suppliers while Q is at hand (only
when it is needed), and the backward scales it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict

import torch
from torch.autograd.function import FunctionCtx

from posematch.losses.fused import fused_solver
from posematch.losses.threads import intra_op_threads
from posematch.losses.workspace import scratch

SUBPIXEL_SPREAD = math.sqrt(2.0)  # largest distance between two demanders of one dot, px


def pixel_costs(positions: torch.Tensor, shape: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """(P, M, h * w) Euclidean distances from each pixel centre (x=j, y=i) of an h x w map to each
    of the (P, M, 2) demander positions (x, y), in heatmap pixels, written into ``out``."""
    h, w = shape
    xs = torch.arange(w, dtype=positions.dtype, device=positions.device)
    ys = torch.arange(h, dtype=positions.dtype, device=positions.device).unsqueeze(-1)
    pos = positions.unsqueeze(-2).unsqueeze(-2)  # (P, M, 1, 1, 2)
    dx2, dy2 = (xs - pos[..., 0]) ** 2, (ys - pos[..., 1]) ** 2
    return torch.add(dx2, dy2, out=out.view(*positions.shape[:2], h, w)).sqrt_().view(out.shape)


def paired_products(matrix: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The products matrix[p] @ vectors[p] of a (P, M, N) and a (P, N) tensor, P even, as a
    (P/2, 2, M) view (``row_products`` for (P, M)).

    Run as a product of pairs of problems, (2M, N) @ (N, 2), of which the two cross terms are
    thrown away: MKL runs that shape faster than P (M, N) @ (N, 1) products, which it treats as
    matrix-vector products (twice the multiply-adds, but this pass is bound by reading the
    matrix; ``make bench`` has the numbers).
    """
    p, m, n = matrix.shape
    pairs = torch.bmm(matrix.view(p // 2, 2 * m, n), vectors.reshape(p // 2, 2, n).transpose(1, 2))
    # pairs[k, g * M + j, h] = matrix[2k + g, j] @ vectors[2k + h]: keep g == h.
    return pairs.view(p // 2, 2, m, 2).diagonal(dim1=1, dim2=3).transpose(1, 2)


def row_products(matrix: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(P, M) products matrix[p] @ vectors[p] of a (P, M, N) and a (P, N) tensor, P even."""
    return paired_products(matrix, vectors).reshape(matrix.shape[:2])


def sinkhorn_scalings(
    a: torch.Tensor,
    kernel: torch.Tensor,
    row_factor: torch.Tensor,
    b: torch.Tensor,
    max_iters: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run Sinkhorn on a batch of problems with supplier-stabilised kernels, each problem until
    its own column-marginal error is below ``tol``.

    Args:
        a: (P, N) supplier masses, P even.
        kernel: (P, M, N) stabilised kernel exp(-(C - min_j C) / reg), entries in (0, 1]. The
            demander axis comes first so that both products below stream over contiguous pixels.
        row_factor: (P, N) exp(-(min_j C - min C) / reg), the supplier factor taken out of K~.
        b: (P, M) demander masses (zeros allowed).
        max_iters: the most demander scalings to run (at least 1).
        tol: a problem stops after the first scaling that leaves ||P^T 1 - b||_2 below this.

    Returns:
        v: (P, M) demander scalings (scale-free: only ratios matter), t = v K~ (P, N) at that v, and
        the most scalings any problem ran.
    """
    (p, m), n = b.shape, a.shape[-1]
    v_out = torch.empty_like(b)
    t_out = torch.empty_like(a)
    # The problems still running: their rows of a, K~, b and their place in the outputs. A
    # problem that stops keeps its v (so its t, recomputed, stays the same) until the running
    # ones are at most half of those carried, then the carried set is cut down to them: the
    # scalings of a batch run on ever fewer problems (at 64x48 half of them stop by the 13th of
    # ~27), at the price of one copy of the rows kept.
    rows = torch.arange(p, device=a.device)
    run_a, run_kernel, run_b = a, kernel, b.view(-1, 2, m)  # (P/2, 2, M), like paired_products
    # POT's first scaling, v = b / (K^T 1), in stabilised units: K^T 1 = K~ exp(-min_j C / reg),
    # and the common factor that keeps exp(-min_j C / reg) from underflowing cancels in ratios.
    # (Every product of K~ with a non-zero, non-negative vector is positive: v_j = 0 iff b_j = 0.)
    v = run_b / paired_products(kernel, row_factor)
    stopped = torch.zeros(p // 2, 2, dtype=torch.bool, device=a.device)
    iters = cuts = 1
    while True:
        if iters % 8 == 1:
            # Only ratios of v matter; pinning the largest at 1 keeps K~ v away from under- and
            # overflow (each scaling changes v by the factors b / P^T 1, so every 8th will do).
            v = v / v.amax(dim=-1, keepdim=True)
        carried = run_a.shape[0]
        t = scratch("t", (carried, n), a)
        y = scratch("y", (carried, n), a)
        torch.bmm(v.view(carried, 1, m), run_kernel, out=t.unsqueeze(1))
        torch.div(run_a, t, out=y)
        k_y = paired_products(run_kernel, y)  # K~ (a / t)
        colsum = v * k_y  # P^T 1
        if iters >= max_iters:
            stopped.fill_(True)
        else:
            stopped |= torch.linalg.vector_norm(colsum - run_b, dim=-1) < tol
        running = int((~stopped).sum())
        if running == 0 or 2 * running <= carried:
            done = stopped.view(-1)
            v_out[rows[done]] = v.reshape(-1, m)[done]
            t_out[rows[done]] = t[done]
            if running == 0:
                return v_out, t_out, iters
            # Cut down to the running problems, in pairs: an odd count keeps one stopped problem
            # (its v stays, so its row of the outputs is already right).
            keep = ~done
            if running % 2:
                keep[done.nonzero()[0]] = True
            v, stopped = v.reshape(-1, m)[keep].view(-1, 2, m), stopped.view(-1)[keep].view(-1, 2)
            rows, run_a, run_b = rows[keep], run_a[keep], run_b.view(-1, m)[keep].view(-1, 2, m)
            run_kernel = torch.index_select(
                run_kernel,
                0,
                keep.nonzero().squeeze(-1),
                # two blocks in turn: a copy never reads the block it writes
                out=scratch(f"running{cuts % 2}", (int(keep.sum()), m, n), a),
            )
            k_y = k_y.reshape(-1, m)[keep].view(-1, 2, m)
            cuts += 1
        v = torch.where(stopped.unsqueeze(-1), v, run_b / k_y)  # = v b / P^T 1 while running
        iters += 1


def _solve(
    a: torch.Tensor,
    positions: torch.Tensor,
    b: torch.Tensor,
    shape: tuple[int, int],
    reg: float,
    max_iters: int,
    tol: float,
    need_grad: bool,
    fused: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """<C, P> per problem (P,), its gradient w.r.t. the suppliers (P, N) when ``need_grad`` (else
    None), and the scalings run (see ``MatchingCost``); from the kernel on by the ``fused`` CPU op
    when given, else by the batched torch ops (P even: they run pairs of problems)."""
    (problems, demanders), pixels = b.shape, a.shape[-1]
    cost = pixel_costs(positions, shape, out=scratch("cost", (problems, demanders, pixels), a))
    nearest = cost.amin(dim=-2, keepdim=True)
    # Far pixels' factors fall below float32's normal range, where x86 arithmetic on subnormal
    # numbers costs ~100x (their exp, and their products in the first scaling's bmm): they are
    # set to 0 instead, a change far below the rounding of any sum they enter (each holds its
    # nearest pixel's factor, 1). The cut keeps every product with the kernel (>= e^(-sqrt(2)
    # / reg)) a normal number.
    spread = (nearest.amin(dim=-1, keepdim=True) - nearest).squeeze(-2) / reg
    cut = math.log(torch.finfo(cost.dtype).tiny) + SUBPIXEL_SPREAD / reg
    far = spread < cut
    # (exp of -inf, or of a number that underflows, takes a slow path: ~4x a plain exp.)
    row_factor = spread.clamp_min_(cut).exp_().masked_fill_(far, 0.0)
    # exp((nearest - C) / reg) in one pass before the exp.
    kernel = torch.add(nearest / reg, cost, alpha=-1.0 / reg, out=scratch("kernel", cost.shape, a))
    kernel.exp_()
    if reg < SUBPIXEL_SPREAD / 80.0:  # only then can exp underflow (spread <= sqrt(2) px)
        kernel.clamp_min_(torch.finfo(kernel.dtype).tiny)
    if fused is not None:  # the scalings and all after them, one problem at a time
        value, grad, iters_each = fused(a, cost, kernel, row_factor, b, max_iters, tol, need_grad)
        return value, grad if need_grad else None, int(iters_each.max())
    v, t, iters = sinkhorn_scalings(a, kernel, row_factor, b, max_iters, tol)
    q = kernel.mul_(v.unsqueeze(-1)).mul_(t.reciprocal_().unsqueeze(-2))  # P = q * a
    qc = cost.mul_(q)  # the cost is not needed any more
    demander_cost = row_products(qc, a)  # sum_i P_ji C_ji, (P, M)
    value = demander_cost.sum(dim=-1)
    if not need_grad:
        return value, None, iters
    # <Q_i, C_i> per supplier, (P, N): a sum over the M demanders, as a product (~2.5x faster
    # than a reduction over that middle axis); only the gradient needs it.
    ones = torch.ones(q.shape[0], 1, q.shape[1], dtype=q.dtype, device=q.device)
    row_cost = torch.bmm(ones, qc).squeeze(1)
    lam = _multipliers(a, q, b, row_cost, demander_cost, workspace=qc)
    # dL/da_i = <Q_i, C_i> - sum_j lambda_j Q_ji, computed here while Q is at hand: the backward
    # only scales it, and nothing of the (P, M, N) scratch has to outlive the call.
    grad = row_cost.sub_(torch.bmm(lam.unsqueeze(1), q).squeeze(1))
    return value, grad, iters


def _multipliers(
    a: torch.Tensor,
    q: torch.Tensor,
    b: torch.Tensor,
    row_cost: torch.Tensor,
    demander_cost: torch.Tensor,
    workspace: torch.Tensor,
) -> torch.Tensor:
    """lambda (P, M) of the implicit gradient dL/da_i = <Q_i, C_i> - sum_j Q_ij lambda_j (see
    ``posematch.losses.sinkhorn``); ``workspace`` is a (P, M, N) tensor it may overwrite."""
    active = b > 0
    qa = torch.mul(q, a.unsqueeze(-2), out=workspace)  # P^T
    gram = torch.bmm(qa, q.transpose(-1, -2))  # Q^T diag(a) Q
    # Every row of Q sums to 1, so the Gram matrix's rows sum to P^T 1: its rows give the
    # column marginals, and the Jacobian is a Laplacian (rows summing to 0) exactly.
    jac = torch.diag_embed(gram.sum(dim=-1)) - gram
    # sum_i P_ji (C_ji - <Q_i, C_i>), which sums to 0 over j.
    rhs = demander_cost - row_products(qa, row_cost)
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
    return torch.where(active, lam.to(q.dtype), 0.0)


class CostInfo(TypedDict, total=False):
    """``MatchingCost``'s ``info``: ``threads`` in (the caller's), ``iters`` out (scalings run)."""

    threads: int | None
    iters: int


class _MatchingCostCtx(FunctionCtx):
    """Autograd's ctx as ``MatchingCost`` uses it (annotations only; autograd makes the object)."""

    saved_tensors: tuple[torch.Tensor, ...]
    needs_input_grad: tuple[bool, ...]
    threads: int | None


class MatchingCost(torch.autograd.Function):
    """<C, P> for batched problems, with the gradient w.r.t. the suppliers at the fixed point.

    Inputs: a (P, N) suppliers of an h x w map (``shape``), positions (P, M, 2) of the demanders
    (x, y) in heatmap pixels, b (P, M) demanders.
    """

    @staticmethod
    def forward(
        ctx: _MatchingCostCtx,
        a: torch.Tensor,
        positions: torch.Tensor,
        b: torch.Tensor,
        shape: tuple[int, int],
        reg: float,
        max_iters: int,
        tol: float,
        info: CostInfo,
    ) -> torch.Tensor:
        ctx.threads = info.get("threads")  # the caller's choice (None: the process's count)
        need_grad = bool(ctx.needs_input_grad[0])
        problems = a.shape[0]
        fused = fused_solver() if a.device.type == "cpu" else None
        if problems % 2 and fused is None:  # the torch ops run pairs: a copy of the last fills one
            a, positions, b = (torch.cat([x, x[-1:]]) for x in (a, positions, b))
        value, grad, iters = _solve(a, positions, b, shape, reg, max_iters, tol, need_grad, fused)
        if grad is not None:
            ctx.save_for_backward(grad[:problems])
        info["iters"] = iters
        return value[:problems]

    @staticmethod
    def backward(
        ctx: _MatchingCostCtx, grad_value: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        with intra_op_threads(ctx.threads):
            grad_a = grad * grad_value.unsqueeze(-1)
        return grad_a, None, None, None, None, None, None, None
