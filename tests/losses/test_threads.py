"""The matching loss's thread policy: it splits the work, never changes the result, and follows
the measured cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from posematch.losses import solver
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from posematch.losses.threads import ThreadPolicy, intra_op_threads

pytestmark = pytest.mark.usefixtures("backend")  # tests/losses/conftest.py: both solvers


def _loss_and_grad(threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    b, k, h, w = 4, 17, 64, 48
    heat = torch.nn.functional.softplus(torch.randn(b, k, h, w) * 2).requires_grad_(True)
    dots = torch.rand(b, k, 2) * torch.tensor([w - 1.0, h - 1.0])
    with intra_op_threads(threads):
        loss = SinkhornMatchingLoss(pixel_size=4.0)(heat, dots, torch.ones(b, k))
        loss.backward()
    return loss.detach(), heat.grad


def test_loss_and_gradient_are_bit_identical_with_one_and_two_threads():
    before = torch.get_num_threads()
    one, two = _loss_and_grad(1), _loss_and_grad(2)
    assert torch.get_num_threads() == before  # restored
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_policy_learns_both_counts_then_keeps_the_cheaper_and_probes_the_other(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    policy = ThreadPolicy(probe_every=4, warmup=1, learn=4)
    # A busy machine: 2 threads cost 3x per unit of work; the unmeasured first call costs 100.
    seconds = {1: 1.0, 2: 3.0}
    picks = []
    for call in range(12):
        threads = policy.pick()
        picks.append(threads)
        policy.record(threads, 100.0 if call == 0 else seconds[threads], work=1.0)
    # Warm-up on 2, then 2 1 2 1 to learn, then 1 thread except every 4th call, which probes 2.
    assert picks == [2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1]
    assert policy.cost == {1: 1.0, 2: 3.0}  # the warm-up call left no trace
    # The rival leaves: each probe moves 2 threads' average 0.3 of the way to 0.1 (3 -> 2.13 ->
    # 1.521 -> 1.0947 -> 0.796), so the 4th probe brings 2 threads back.
    seconds = {1: 1.0, 2: 0.1}
    picks = []
    for _ in range(13):
        threads = policy.pick()
        picks.append(threads)
        policy.record(threads, seconds[threads], work=1.0)
    assert picks == [2, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2]  # probes on every 4th call
    assert policy.cost[2] == pytest.approx(0.7963, abs=1e-4)
    assert policy.pick() == 2


def test_one_thread_processes_and_bad_options():
    policy = ThreadPolicy()
    with intra_op_threads(1):
        assert policy.pick() == 1
    with pytest.raises(ValueError, match="probe_every=1"):
        ThreadPolicy(probe_every=1)
    with pytest.raises(ValueError, match="learn=1"):
        ThreadPolicy(learn=1)


class _ThreadsOfBigOps(TorchDispatchMode):
    """Records the intra-op thread count of every op that computes (not a view) on a tensor of
    ``size`` elements or more."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        is_view = any(r.alias_info is not None for r in func._schema.returns)
        if not is_view and any(x.numel() >= self.size for x in tensors):
            self.seen.add(torch.get_num_threads())
        return func(*args, **(kwargs or {}))


class _AlwaysOne(ThreadPolicy):
    def pick(self) -> int:
        return 1


def test_the_whole_loss_forward_and_backward_run_on_the_policys_count(monkeypatch):
    # A busy core makes every op left on the process's count wait at its barrier: none may be.
    monkeypatch.setattr(solver, "THREADS", _AlwaysOne())  # the seam holds the policy
    b, k, h, w = 2, 17, 16, 12
    heat = torch.rand(b, k, h, w).requires_grad_(True)
    dots = torch.rand(b, k, 2) * torch.tensor([w - 1.0, h - 1.0])
    with intra_op_threads(2):
        spy = _ThreadsOfBigOps(size=b * k * h * w)
        with spy:
            loss = SinkhornMatchingLoss(pixel_size=4.0)(heat, dots, torch.ones(b, k))
        assert spy.seen == {1}
        spy = _ThreadsOfBigOps(size=b * k * h * w)
        with spy:
            loss.backward()
        assert spy.seen == {1}
