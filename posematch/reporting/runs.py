"""Finding runs and reading their results: every fact from a run's ``run.json``
(``posematch.runinfo``). A run folder without one (written before posematch recorded it) is
skipped with a warning naming it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from posematch import runinfo
from posematch.reporting.metrics import printed_values, read_metrics_json, training_validation
from posematch.reporting.results import (
    MSE,
    Loss,
    Result,
    Setting,
    TablesError,
    flat_facts,
    is_run,
)
from posematch.runinfo import RunInfo

log = logging.getLogger("posematch.tables")


def _natural(path: Path) -> list[Any]:
    """Sort key that puts Hydra's job folder 2_... before 10_..."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _runs_below(folder: Path) -> list[Path]:
    """Run directories under ``folder`` (not descending into runs), in natural order."""
    found: list[Path] = []
    children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
    for child in sorted(children, key=_natural):
        if is_run(child):
            found.append(child)
        elif not child.is_symlink():  # a linked folder could loop back on itself
            found.extend(_runs_below(child))
    return found


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory named or found below the given folders, in command-line order."""
    runs: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise TablesError(f"{path}: no such directory")
        found = [path] if is_run(path) else _runs_below(path)
        if not found:
            raise TablesError(
                f"{path}: not a run directory (no .hydra/config.yaml) and no run directories below it"
            )
        runs.extend(r for r in found if r not in runs)
    return runs


def _loss_of(info: RunInfo) -> Loss | None:
    """The table's loss of a ``run.json`` loss entry."""
    if info.loss is None:
        return None
    if info.loss["kind"] == "mse":
        return MSE
    if info.loss["kind"] != "matching":  # the expected-distance loss: no paper table has it
        return None
    return Loss("matching", str(info.loss["demanders"]), int(info.loss["max_iters"]))


def read_run(run: Path, order: int) -> list[Result]:
    """The results of one run directory: its validation numbers and any test-dev numbers."""
    if runinfo.exists(run):
        return read_recorded_run(run, order)
    log.warning(
        "%s: no run.json (a run folder from before posematch recorded its facts): skipped; "
        "posematch-eval checkpoint=<its best.pth> writes a folder that has one",
        run,
    )
    return []


def read_recorded_run(run: Path, order: int) -> list[Result]:
    """The results of a run that has a ``run.json``: every fact from it, no guessing."""
    try:
        info = RunInfo.read(run)
    except ValueError as err:
        raise TablesError(str(err)) from err
    loss = _loss_of(info)
    if loss is None:
        log.warning("%s: run.json does not say which loss trained this model: skipped", run)
        return []
    if info.split == "test":
        log.info("%s: a held-out test split, in no paper table: skipped", run)
        return []
    setting = Setting(info.dataset, info.model, info.input_size)
    family = "mpii" if info.dataset == "mpii" else "coco"
    boxes = f", {info.boxes} boxes" if info.boxes else ""

    facts = flat_facts(info.budget, info.loss)

    def result(values: Any, source: str, rank: int) -> Result:
        return Result(run, setting, loss, info.split, family, values, source, rank, order, facts)

    values: dict[str, str | None] | None
    path = run / "metrics.json"
    if info.kind == "eval":
        if not path.is_file():
            log.warning("%s: an evaluation without metrics.json", run)
            return [result(None, "no metrics.json", 0)]
        evaluation = read_metrics_json(path)
        if evaluation.get("scored", True) is False:
            log.warning('%s: "scored": false: not used (%s)', path, info.split)
            return [result(None, "metrics.json, not scored", 0)] if info.split == "test-dev" else []
        family, values = printed_values(evaluation, str(path))
        return [result(values, f"metrics.json{boxes}", 2)]
    found, values, source, rank = training_validation(run, boxes)
    family = found or family
    return [result(values, source, rank)]


def collect(runs: Sequence[Path]) -> list[Result]:
    """The results of all runs, in order."""
    return [r for order, run in enumerate(runs) for r in read_run(run, order)]
