"""The one seam between the matching loss's mathematics (``posematch.losses.sinkhorn``) and the
machinery that makes it fast: heatmaps and demanders in, each joint's transport cost <C, P> out,
differentiable with respect to the heatmaps.

Behind it: the suppliers with their hand-written backward (``suppliers``), the batched Sinkhorn
scalings and the implicit gradient (``transport``: a fused C++ op on the CPU, ``fused``; torch ops
on CUDA and as the fallback), the scratch buffers (``workspace``), and on the CPU the process's
thread policy (``threads``), which picks 1 thread or all for each call from timings and never
changes a result.
"""

from __future__ import annotations

import time

import torch

from posematch.losses.suppliers import suppliers_from_heatmaps
from posematch.losses.threads import THREADS, intra_op_threads
from posematch.losses.transport import CostInfo, MatchingCost


def transport_costs(
    heatmaps: torch.Tensor,
    positions: torch.Tensor,
    masses: torch.Tensor,
    reg: float,
    max_iters: int,
    tol: float,
    dead_grad: float,
) -> tuple[torch.Tensor, int]:
    """Per-problem cost <C, P> of the entropic plan between the suppliers of ``heatmaps`` and the
    demanders, and the Sinkhorn scalings run (the most any problem ran).

    Args:
        heatmaps: (P, h, w) float32 or float64, one map per problem (autocast off).
        positions: (P, M, 2) demander positions (x, y) in heatmap pixels.
        masses: (P, M) demander masses (each row sums to 1, zeros allowed).
        reg: entropic regularisation in heatmap pixels.
        max_iters, tol: the stopping rule (``posematch.losses.sinkhorn``).
        dead_grad: the suppliers' surrogate slope at and below zero (0: relu's).

    Returns:
        (P,) costs in heatmap pixels, and the scalings run.
    """
    problems, h, w = heatmaps.shape
    policy = THREADS if heatmaps.device.type == "cpu" else None
    threads = policy.pick() if policy is not None else None
    start = time.perf_counter()
    with intra_op_threads(threads):
        # (1, P, h, w) in, (P, N) out: reshapes are views, so the backward adds no copy here.
        maps = heatmaps.reshape(1, problems, h, w)
        a = suppliers_from_heatmaps(maps, dead_grad, threads).reshape(problems, h * w)
        info: CostInfo = {"threads": threads}  # MatchingCost's backward uses them too
        value = MatchingCost.apply(a, positions, masses, (h, w), reg, max_iters, tol, info)
    if policy is not None:  # work: the (P, M, N) passes, ~2 per scaling and ~6 around them
        assert threads is not None  # the policy's pick
        work = problems * masses.shape[-1] * h * w
        policy.record(threads, time.perf_counter() - start, work * (2 * info["iters"] + 6))
    return value, info["iters"]
