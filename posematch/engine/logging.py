"""Run logging on rank 0: TensorBoard scalars, ``metrics.jsonl`` and a progress display.

The progress display is a tqdm bar (loss and ETA) on a terminal and plain log lines every
``log_every`` steps otherwise (CI logs, files). Other ranks log nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("posematch.train")


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool, log_every: int) -> None:
        self.total, self.desc, self.log_every = total, desc, log_every
        self.count, self.start, self.loss = 0, time.perf_counter(), float("nan")
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        self.plain = enabled and self.bar is None

    def update(self, loss: float) -> None:
        self.count += 1
        self.loss = loss
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}")
            self.bar.update(1)
        elif self.plain and (self.count % self.log_every == 0 or self.count == self.total):
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.count * (self.total - self.count)
            log.info("%s %d/%d loss %.4f eta %.0fs", self.desc, self.count, self.total, loss, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunLogger:
    """TensorBoard + metrics.jsonl writer for one run directory (no-op when not ``enabled``)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, log_every: int = 50) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.log_every = log_every
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def progress(self, total: int, desc: str) -> _Progress:
        return _Progress(total, desc, self.enabled, self.log_every)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and step % self.log_every == 0:
            self.writer.add_scalar(tag, value, step)

    def epoch(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl and the epoch's scalars (train/*, val/*)."""
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        epoch = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                tag = key if "/" in key else f"train/{key}"
                self.writer.add_scalar(tag, value, epoch)
        log.info("epoch %d: %s", epoch, json.dumps(record))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
