"""Suppliers of the matching loss: a = relu(H) / sum(relu(H)) per joint, with its gradient written
out, so that the backward runs on the thread count the loss's thread policy chose
(``posematch.losses.threads``): left to autograd, its ~8 elementwise ops would run on the
process's threads, and with a busy core that costs more than the policy saves.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx

from posematch.losses.threads import intra_op_threads


class _SuppliersCtx(FunctionCtx):
    """Autograd's ctx as ``_Suppliers`` uses it (annotations only; autograd makes the object)."""

    saved_tensors: tuple[torch.Tensor, ...]
    dead_grad: float
    threads: int | None


class _Suppliers(torch.autograd.Function):
    """(P, N) heatmaps -> (P, N) suppliers; the backward on the caller's thread count."""

    @staticmethod
    def forward(
        ctx: _SuppliersCtx, flat_h: torch.Tensor, dead_grad: float, threads: int | None
    ) -> torch.Tensor:
        flat = flat_h.clamp_min(0)
        # Dividing by the maximum first keeps the sum finite for huge logits.
        peak = flat.amax(dim=-1, keepdim=True)
        alive = peak > 0
        flat = flat.div_(torch.where(alive, peak, 1.0))
        total = flat.sum(dim=-1, keepdim=True)
        a = flat.div_(torch.where(alive, total, 1.0))
        if not bool(alive.all()):  # uniform suppliers for heatmaps without positive mass
            a = torch.where(alive, a, 1.0 / a.shape[-1])
        # d a_i / d r_k = (delta_ik - a_i) / sum(r), with sum(r) = total * peak.
        inv_mass = torch.where(alive, (total * peak).reciprocal(), 0.0)
        ctx.save_for_backward(flat_h, a, inv_mass, alive)
        ctx.dead_grad = dead_grad
        ctx.threads = threads
        return a

    @staticmethod
    def backward(ctx: _SuppliersCtx, grad_a: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        flat_h, a, inv_mass, alive = ctx.saved_tensors
        with intra_op_threads(ctx.threads):
            # Live heatmaps: relu's slope (1 above zero, ``dead_grad`` at or below) times the
            # normalisation's gradient; dead ones: dead_grad * (g - mean g) (see
            # ``suppliers_from_heatmaps``), 0 for the paper's relu.
            centred = grad_a - (grad_a * a).sum(dim=-1, keepdim=True)
            grad = centred.mul_(inv_mass)
            if ctx.dead_grad > 0:
                grad = torch.where(flat_h > 0, grad, ctx.dead_grad * grad)
                dead = ctx.dead_grad * (grad_a - grad_a.mean(dim=-1, keepdim=True))
                grad = torch.where(alive, grad, dead)
            else:
                grad = grad.masked_fill_(flat_h <= 0, 0.0)
        return grad, None, None


def suppliers_from_heatmaps(
    heatmaps: torch.Tensor, dead_grad: float = 0.0, threads: int | None = None
) -> torch.Tensor:
    """Suppliers a = relu(H) / sum(relu(H)) per joint, uniform when a heatmap has no positive mass.

    Args:
        heatmaps: (B, K, h, w) float.
        dead_grad: slope of relu's gradient at and below zero. 0 (the paper's relu): a pixel <= 0
            gets no gradient, and a heatmap without positive value gets none at all, so it never
            recovers. > 0: the value is unchanged, but the gradient reaches pixels <= 0 with this
            slope, and a heatmap without positive value (uniform suppliers) passes ``dead_grad``
            times the gradient of its uniform suppliers to its pixels, centred: pixels near the
            dot are pushed up, so a dead heatmap can come back. A surrogate gradient, not the
            gradient of the value (it does not keep a from-scratch relu head alive and learning:
            results/study.md).
        threads: intra-op threads for the backward (None: as the process is set).

    Returns:
        (B, K, h * w) masses summing to 1 over the last axis, differentiable w.r.t. the heatmaps.
    """
    return _Suppliers.apply(heatmaps.flatten(2), dead_grad, threads)
