"""What the paper's tables are made of: one run's numbers for one group of cells (``Result``), the
setting and loss they belong to, and what counts as a run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posematch import runinfo

DEFAULT_DEMANDERS = "subpixel"  # conf/loss/sinkhorn.yaml
DEFAULT_MAX_ITERS = 1000


class TablesError(Exception):
    """A run directory or metrics file that cannot be read; the message names the path."""


@dataclass(frozen=True)
class Setting:
    """What a group of rows is about: data set name, model config name, input (width, height) px."""

    dataset: str
    model: str
    size: tuple[int, int]


@dataclass(frozen=True)
class Loss:
    """The loss that trained a model: ``mse``, or ``matching`` with its demanders and iterations."""

    kind: str
    demanders: str | None = None
    max_iters: int | None = None


MSE = Loss("mse")
MATCHING = Loss("matching", DEFAULT_DEMANDERS, DEFAULT_MAX_ITERS)


@dataclass
class Result:
    """The numbers one run gives one table cell group.

    values: column -> printed value (``paper_row``), None when the run has no record. rank: 2 for
    ``metrics.json``, 1 for ``metrics.jsonl``, 0 for none. order: position among the runs found.
    facts: how the model was trained, flat (``budget.epochs``, ``loss.tol``, ...; ``run.json``'s
    budget and loss options), empty for runs made before ``run.json`` recorded them: two cells
    are compared only when these agree but for the compared factor.
    """

    run: Path
    setting: Setting
    loss: Loss
    split: str  # "val" | "test-dev"
    family: str  # "coco" | "mpii": which columns
    values: dict[str, str | None] | None
    source: str
    rank: int
    order: int
    facts: dict[str, Any] = field(default_factory=dict)


def flat_facts(budget: dict[str, Any] | None, loss: dict[str, Any] | None) -> dict[str, Any]:
    """``{"budget.epochs": 3, "loss.tol": 1e-9, ...}`` from ``run.json``'s budget and loss."""
    out: dict[str, Any] = {}
    for prefix, part in (("budget", budget), ("loss", loss)):
        for key, value in (part or {}).items():
            if key not in ("kind", "target"):
                out[f"{prefix}.{key}"] = value
    return out


def is_run(path: Path) -> bool:
    """A run directory holds a ``run.json`` or the composed config Hydra wrote (older runs)."""
    return runinfo.exists(path) or (path / ".hydra" / "config.yaml").is_file()
