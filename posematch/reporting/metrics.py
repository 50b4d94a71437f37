"""Reading a run's numbers: ``metrics.json`` (``posematch-eval``), the last validation record of
``metrics.jsonl`` (the trainer), and their values as the paper prints them (``paper_row``)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from posematch.evaluation.report import COCO_COLUMNS, paper_row
from posematch.evaluation.report import MISSING as NOT_SCORED
from posematch.reporting.results import TablesError

log = logging.getLogger("posematch.tables")


def read_metrics_json(path: Path) -> dict[str, Any]:
    """The flat metrics a ``posematch-eval`` run wrote."""
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TablesError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise TablesError(f"{path}: expected a JSON object of metrics")
    return metrics


def last_validation(path: Path) -> tuple[dict[str, Any], int | None, int] | None:
    """The ``val/*`` metrics of the last record that has them, its epoch and line; None if none."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise TablesError(f"{path}: not a text file ({err})") from err
    last = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TablesError(f"{path}:{n}: not a JSON record ({err.msg})") from err
        if not isinstance(record, dict):
            raise TablesError(f"{path}:{n}: expected a JSON object per line")
        val = {k.removeprefix("val/"): v for k, v in record.items() if k.startswith("val/")}
        if val:
            last = (val, record.get("epoch"), n)
    return last


def printed_values(metrics: dict[str, Any], where: str) -> tuple[str, dict[str, str | None]]:
    """(family, column -> printed value) through ``paper_row``; non-finite values are missing."""
    try:
        header, values = paper_row(metrics)
    except (ValueError, TypeError) as err:
        raise TablesError(f"{where}: {err}") from err
    family = "coco" if tuple(header) == COCO_COLUMNS else "mpii"
    return family, {
        h: None if v == NOT_SCORED or not math.isfinite(float(v)) else v
        for h, v in zip(header, values, strict=True)
    }


def training_validation(
    run: Path, boxes: str
) -> tuple[str | None, dict[str, str | None] | None, str, int]:
    """The trainer's last validation in ``run/metrics.jsonl``: (family, printed values, source,
    rank 1); ``(None, None, "no validation record", 0)`` with a warning when there is none.
    ``boxes``: the source's suffix (", gt boxes")."""
    jsonl = run / "metrics.jsonl"
    record = last_validation(jsonl) if jsonl.is_file() else None
    if record is None:
        log.warning("%s: no validation record (metrics.json, val/* in metrics.jsonl)", run)
        return None, None, "no validation record", 0
    metrics, epoch, line = record
    family, values = printed_values(metrics, f"{jsonl}:{line}")
    return family, values, f"metrics.jsonl, epoch {epoch}{boxes}", 1
