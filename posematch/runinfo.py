"""``run.json``: what a run was, written by ``posematch-train`` and ``posematch-eval`` and read by
``posematch-tables`` and the demo, so that no tool guesses facts from class names or path words.

Fields (plain JSON):
- kind: ``"train"`` or ``"eval"``.
- dataset: the data config's name (``coco``, ``mpii``, ``synthetic``, your own).
- split: the split scored: ``val``, ``test-dev`` (COCO test-dev, scored by the server) or ``test``
  (a held-out split with ground truth, e.g. the synthetic data's).
- boxes: ``gt`` or ``det`` person boxes of the scored split (None for MPII, which has no detector).
- model: the model config's name (``hrnet_w32``) and input_size: [width, height] pixels.
- loss: ``{"kind": "mse"}``, ``{"kind": "matching", "demanders": ..., "max_iters": ...}`` or
  ``{"kind": "expected_distance"}``, with the loss's numeric options (``reg``, ``tol``,
  ``pixel_size``, ``dead_grad``) where it has them, and ``mass_weight`` (with ``mass_target``)
  and ``tv_weight`` only when they are on,
  plus its ``target`` class; None when an evaluation cannot tell what trained its checkpoint.
- codec: the codec class and its decoder; seed: the training seed (train).
- budget: how the model was trained (train; eval copies it from the training run's ``run.json``
  when there is one): ``epochs``, ``steps_per_epoch`` (the cap, or None for whole epochs),
  ``batch_size`` (per process) and ``processes``, ``optimizer`` (class name) and ``lr``,
  ``schedule`` (class name and options), ``warmup_iters``, and the head's output ``activation``.
  ``posematch-tables`` pairs only runs whose budgets agree.
- checkpoint: the evaluated file (eval); versions: posematch, torch and Python.

This module imports nothing of posematch: reading a record needs no config system.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOSS_KINDS = ("mse", "matching", "expected_distance")

FILE_NAME = "run.json"
SPLITS = ("val", "test-dev", "test")
KINDS = ("train", "eval")


@dataclass(frozen=True)
class RunInfo:
    """One run's facts (see the module docstring for each field)."""

    kind: str
    dataset: str
    split: str
    model: str
    input_size: tuple[int, int]
    loss: dict[str, Any] | None
    boxes: str | None = None
    codec: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    budget: dict[str, Any] | None = None
    checkpoint: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r}: expected one of {SPLITS}")
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2:
            raise ValueError(f"input_size={self.input_size!r}: expected [width, height]")
        object.__setattr__(self, "input_size", size)
        if self.loss is not None and self.loss.get("kind") not in LOSS_KINDS:
            raise ValueError(f"loss={self.loss!r}: kind must be one of {LOSS_KINDS}")

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/run.json`` atomically (a temporary file renamed over it)."""
        path = Path(folder) / FILE_NAME
        tmp = path.with_suffix(".json.tmp")
        data = {**asdict(self), "input_size": list(self.input_size)}
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RunInfo:
        """The record of ``folder``; ValueError naming the file for a damaged or foreign one."""
        path = Path(folder) / FILE_NAME
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fields {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


def exists(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``run.json``."""
    return (Path(folder) / FILE_NAME).is_file()
