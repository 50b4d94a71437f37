"""Iterating a DataLoader so that its worker processes end with the iteration, error or not.

Left to the iterator's garbage collection, an error leaves the workers running: the traceback
(which Hydra keeps to print) holds the iterator, and at interpreter exit multiprocessing waits for
workers that are blocked on a full queue (measured: ``posematch-eval`` printed a ``BadRecordError``
for an unreadable image and never exited).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils.data import DataLoader

from posematch.types import Batch


@contextmanager
def batches(loader: DataLoader) -> Iterator[Iterator[Batch]]:
    """``with batches(loader) as it: for batch in it: ...``; on leaving, the loader's workers (if
    any) are stopped at once. Torch has no public call for this; the iterator's own shutdown is
    idempotent and a no-op without workers."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
