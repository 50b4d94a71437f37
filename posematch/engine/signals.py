"""Stop signals: training stops cleanly on SIGTERM / SIGINT, loader workers ignore them.

The trainer records a signal (``StopFlag``), finishes its step, writes a mid-epoch checkpoint and
raises ``Preempted``, whose ``exit_code`` the command exits with (``128 + signal``).

Loader workers (training and evaluation) ignore SIGTERM and SIGINT: a stop signal is the main
process's business. Launchers deliver SIGTERM to a whole process group (torchrun's agent),
schedulers to every process of a job (SLURM), and a terminal's Ctrl-C sends SIGINT to its
foreground group: by default each of these also kills the loader workers, and the main process,
which was finishing its step to write a mid-epoch checkpoint, then fails on a dead worker instead.
Workers still end when the main process tells them (the loader's shutdown) or dies (PyTorch's
worker watchdog).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from posematch.engine import dist

log = logging.getLogger("posematch.train")

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: SIGTERM and SIGINT do not stop this worker."""
    del worker_id  # the same for every worker
    for sig in PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Preempted(Exception):
    """Training stopped on a signal after writing a mid-epoch ``last.pth``; ``exit_code`` is
    ``128 + signal`` (143 SIGTERM, 130 SIGINT)."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by signal {signum}: resume from {checkpoint} with resume=auto")
        self.signum = signum
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint


class StopFlag:
    """Records SIGTERM / SIGINT instead of dying mid-step; the old handlers come back on exit."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main one
            for sig in PREEMPT_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        log.warning("signal %d: finishing the current step, then saving last.pth", signum)
        self.signum = signum

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self, device: torch.device) -> int:
        """The signal to stop on, the same on every rank (the largest any rank received)."""
        if not dist.is_distributed():
            return self.signum
        return int(dist.all_reduce_max(torch.tensor([self.signum], device=device)).item())
