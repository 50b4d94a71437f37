"""Data-loader worker set-up shared by training and evaluation loaders.

A stop signal is the main process's business. Launchers deliver SIGTERM to a whole process group
(torchrun's agent), schedulers to every process of a job (SLURM), and a terminal's Ctrl-C sends
SIGINT to its foreground group: by default each of these also kills the loader workers, and the
main process, which was finishing its step to write a mid-epoch checkpoint, then fails on a dead
worker instead. Workers therefore ignore SIGTERM and SIGINT; they still end when the main process
tells them (the loader's shutdown) or dies (PyTorch's worker watchdog).
"""

from __future__ import annotations

import signal


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: SIGTERM and SIGINT do not stop this worker."""
    del worker_id  # the same for every worker
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
