"""How many intra-op threads the matching loss's Sinkhorn work runs on, chosen by measuring it.

Each Sinkhorn iteration is a handful of small ops, and torch's intra-op threads meet at a barrier
after every op. When another process holds a core (a loader worker, a second job), each barrier
waits for a thread that is not running: measured on 2 cores with one busy rival, 2 threads ran the
loss 1.2-2.8x slower than 1, while on an idle machine they run it in half the time
(``scripts/bench_loss_floor.py``). ``ThreadPolicy`` times the work per unit with the process's
thread count and with 1 thread, uses the faster, and times the other again every ``probe_every``
calls, as the load changes (``THREADS``, one per process). The count changes how work is split, not its arithmetic: the loss and
its gradient are bit-identical with 1 and 2 threads (``tests/losses/test_threads.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads (None: as the process is set), then restore."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadPolicy:
    """Picks 1 thread or the process's count for each call, from measured seconds per unit of work.

    Args:
        probe_every: calls between two measurements of the count not in use.
        smoothing: weight of the newest measurement in each count's running average.
    """

    def __init__(self, probe_every: int = 32, smoothing: float = 0.3) -> None:
        if probe_every < 2:
            raise ValueError(f"probe_every={probe_every}: must be at least 2")
        self.probe_every = probe_every
        self.smoothing = smoothing
        self.cost: dict[int, float] = {}  # threads -> running seconds per unit of work
        self.calls = 0

    def pick(self) -> int:
        """The thread count for the next call."""
        most = torch.get_num_threads()
        if most == 1:
            return 1
        for threads in (most, 1):  # each count measured once before any choice
            if threads not in self.cost:
                return threads
        best = min((most, 1), key=lambda t: self.cost[t])
        if self.calls % self.probe_every == self.probe_every - 1:
            return 1 if best == most else most
        return best

    def record(self, threads: int, seconds: float, work: float) -> None:
        """Account a call that ran ``work`` units (any consistent measure) in ``seconds``."""
        self.calls += 1
        per_unit = seconds / max(work, 1.0)
        old = self.cost.get(threads)
        self.cost[threads] = per_unit if old is None else old + self.smoothing * (per_unit - old)


# One per process: the load it measures is the machine's, whichever loss instance runs.
THREADS = ThreadPolicy()
