"""Run logging on rank 0: TensorBoard scalars, ``metrics.jsonl`` and a progress display.

The progress display is a tqdm bar (loss and ETA) on a terminal and plain log lines every
``log_every`` steps otherwise (CI logs, files). Other ranks log nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posematch.draw import heatmap_panel
from posematch.evaluation.report import strict_json

log = logging.getLogger("posematch.train")


class _Progress:
    """One epoch's progress: a tqdm bar on a terminal, else a log line every ``log_every`` steps
    with the loss, the lr, the mean step time and the ETA of the epoch and of the run
    (``later_steps``: the steps of the epochs after this one; validation time not included)."""

    def __init__(
        self, total: int, desc: str, enabled: bool, log_every: int, later_steps: int = 0
    ) -> None:
        self.total, self.desc, self.log_every = total, desc, log_every
        self.later_steps = later_steps
        self.count, self.start, self.loss = 0, time.perf_counter(), float("nan")
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        self.plain = enabled and self.bar is None

    def update(self, loss: float, lr: float | None = None) -> None:
        self.count += 1
        self.loss = loss
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}")
            self.bar.update(1)
        elif self.plain and (self.count % self.log_every == 0 or self.count == self.total):
            per_step = (time.perf_counter() - self.start) / self.count
            left = per_step * (self.total - self.count)
            run_left = left + per_step * self.later_steps
            rate = "" if lr is None else f" lr {lr:.3g}"
            log.info(
                "%s %d/%d loss %.4f%s %.2fs/step eta %s (run %s)", self.desc, self.count,
                self.total, loss, rate, per_step, _duration(left), _duration(run_left),
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RunLogger:
    """TensorBoard + metrics.jsonl writer for one run directory (no-op when not ``enabled``)."""

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        log_every: int = 50,
        joint_names: Sequence[str] | None = None,
        rgb: bool = True,
    ) -> None:
        """``joint_names`` label the heatmap panel's tiles; ``rgb``: the crops' channel order."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.log_every = log_every
        self.joint_names = list(joint_names) if joint_names is not None else None
        self.rgb = rgb
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def progress(self, total: int, desc: str, later_steps: int = 0) -> _Progress:
        return _Progress(total, desc, self.enabled, self.log_every, later_steps)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and step % self.log_every == 0:
            self.writer.add_scalar(tag, value, step)

    def heatmaps(
        self,
        step: int,
        image: torch.Tensor,
        heatmaps: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
    ) -> None:
        """Image panel of one sample: its predicted heatmaps over its crop against the ground
        truth, one tile per joint with its name (``posematch.draw.heatmap_panel``)."""
        if self.writer is not None:
            arrays = (t.detach().float().cpu().numpy() for t in (image, heatmaps, target, weight))
            image_np, heatmaps_np, target_np, weight_np = arrays
            panel = heatmap_panel(
                image_np,
                heatmaps_np,
                target_np,
                weight_np,
                names=self.joint_names,
                rgb=self.rgb,
            )
            self.writer.add_image("train/heatmaps_vs_gt", panel, step, dataformats="HWC")

    def epoch(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl (strict JSON: a non-finite value is ``null``) and the epoch's
        scalars (train/*, val/*)."""
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(strict_json(record) + "\n")
        epoch = record["epoch"]
        assert self.writer is not None  # made with enabled
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                tag = key if "/" in key else f"train/{key}"
                self.writer.add_scalar(tag, value, epoch)
        log.info("epoch %d: %s", epoch, strict_json(record))

    def keep_epochs(self, last_epoch: int) -> None:
        """Drop metrics.jsonl records after ``last_epoch`` (a resumed run redoes those epochs)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                epoch = json.loads(line)["epoch"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if number == len(lines):  # a write cut short by the kill: that epoch is redone
                    log.warning("%s: dropping its torn last line (%s)", path, err)
                    continue
                raise ValueError(
                    f"{path}: line {number} is not a metrics record ({err!r})"
                ) from err
            if epoch <= last_epoch:
                kept.append(line)
        if len(kept) != len(lines):
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
