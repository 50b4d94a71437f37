"""Reading a run's numbers: ``metrics.json`` (``posematch-eval``), the last validation record of
``metrics.jsonl`` (the trainer), and their values as the paper prints them (``paper_row``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from posematch.evaluation.report import COCO_COLUMNS, paper_row
from posematch.evaluation.report import MISSING as NOT_SCORED
from posematch.reporting.results import TablesError


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
