"""How many intra-op threads the matching loss's Sinkhorn work runs on, chosen by measuring it.

Each Sinkhorn iteration is a handful of small ops, and torch's intra-op threads meet at a barrier
after every op. When another process holds a core (a loader worker, a second job), each barrier
waits for a thread that is not running, and all threads can be slower than one, while on an idle
machine they are faster (``scripts/bench_loss_floor.py`` measures both). ``ThreadPolicy`` times the work per unit with the process's
thread count and with 1 thread, uses the faster, and times the other again every ``probe_every``
calls, as the load changes (``THREADS``, one per process). The count changes how work is split,
not its arithmetic: the loss and its gradient are bit-identical with 1 and 2 threads.
"""

from __future__ import annotations

import statistics
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

    The first ``warmup`` calls run on the process's count and are not measured (they pay for
    allocation and lazy set-up); the next ``learn`` calls alternate the two counts, and each
    count's median over them starts its running average (a median: one call slowed by a burst of
    load must not decide); from then on the count with the lower average runs, and every
    ``probe_every``-th call measures the other again.

    Args:
        probe_every: calls between two measurements of the count not in use.
        smoothing: weight of the newest measurement in each count's running average.
        warmup: first calls, not measured.
        learn: calls that alternate the counts before the first choice (even: both equally).
    """

    def __init__(
        self, probe_every: int = 16, smoothing: float = 0.3, warmup: int = 1, learn: int = 6
    ) -> None:
        if probe_every < 2:
            raise ValueError(f"probe_every={probe_every}: must be at least 2")
        if warmup < 0 or learn < 2:
            raise ValueError(f"warmup={warmup}, learn={learn}: need warmup >= 0 and learn >= 2")
        self.probe_every = probe_every
        self.smoothing = smoothing
        self.warmup = warmup
        self.learn = learn
        self.cost: dict[int, float] = {}  # threads -> running seconds per unit of work
        self.samples: dict[int, list[float]] = {}  # the learning calls' measurements
        self.calls = 0

    def pick(self) -> int:
        """The thread count for the next call."""
        most = torch.get_num_threads()
        if most == 1:
            return 1
        n = self.calls - self.warmup
        if n < 0:
            return most
        if n < self.learn or not {1, most} <= set(self.cost):
            return most if n % 2 == 0 else 1  # learning (and after a change of thread count)
        best = min((most, 1), key=lambda t: self.cost[t])
        if (n - self.learn) % self.probe_every == self.probe_every - 1:
            return 1 if best == most else most
        return best

    def record(self, threads: int, seconds: float, work: float) -> None:
        """Account a call that ran ``work`` units (any consistent measure) in ``seconds``."""
        self.calls += 1
        if self.calls <= self.warmup:
            return
        per_unit = seconds / max(work, 1.0)
        if self.calls <= self.warmup + self.learn:
            samples = self.samples.setdefault(threads, [])
            samples.append(per_unit)
            self.cost[threads] = statistics.median(samples)
            return
        old = self.cost.get(threads)
        self.cost[threads] = per_unit if old is None else old + self.smoothing * (per_unit - old)


# One per process: the load it measures is the machine's, whichever loss instance runs.
THREADS = ThreadPolicy()
