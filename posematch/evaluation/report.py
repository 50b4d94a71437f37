"""Paper-style rows of metrics (percent, one decimal), as the tables of Qu et al. 2022 print them.

COCO: AP AP50 AP75 APM APL AR (pycocotools stats x 100). MPII: Mean Hea Sho Elb Wri Hip Kne Ank
(PCKh@0.5, already in percent). DeepLabCut projects (``markdown_row`` only, no paper table): RMSE
RMSE_pcutoff (pixels, one decimal) PCK (percent) AP (x 100; missing without OKS sigmas).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

COCO_COLUMNS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
MPII_COLUMNS = {
    "Mean": "Mean",
    "Hea": "Head",
    "Sho": "Shoulder",
    "Elb": "Elbow",
    "Wri": "Wrist",
    "Hip": "Hip",
    "Kne": "Knee",
    "Ank": "Ankle",
}


MISSING = "–"


def percent(value: float | None, scale: float = 100.0) -> str:
    """``value * scale`` with one decimal; ``MISSING`` for pycocotools' -1 (no ground truth in that
    area range), for non-finite values and for ``None`` (a non-finite value read back from JSON)."""
    if value is None:
        return MISSING
    value = float(value)
    if not math.isfinite(value) or value < 0:
        return MISSING
    return f"{scale * value:.1f}"


def paper_row(metrics: Mapping[str, float | bool]) -> tuple[list[str], list[str]]:
    """(header, values) of the table row for COCO-style or MPII-style metrics."""
    if all(key in metrics for key in COCO_COLUMNS):
        return list(COCO_COLUMNS), [percent(metrics[k]) for k in COCO_COLUMNS]
    if all(key in metrics for key in MPII_COLUMNS.values()):
        return list(MPII_COLUMNS), [percent(metrics[v], 1.0) for v in MPII_COLUMNS.values()]
    raise ValueError(f"metrics: neither COCO nor MPII columns in {sorted(metrics)}")


DLC_COLUMNS = ("RMSE", "RMSE_pcutoff", "PCK", "AP")


def dlc_row(metrics: Mapping[str, float | bool]) -> tuple[list[str], list[str]]:
    """(header, values) of ``posematch.evaluation.dlc.DlcEvaluator``'s metrics."""
    scales = {"RMSE": 1.0, "RMSE_pcutoff": 1.0, "PCK": 1.0, "AP": 100.0}
    values = [percent(metrics[k], scales[k]) if k in metrics else MISSING for k in DLC_COLUMNS]
    return list(DLC_COLUMNS), values


def markdown_row(metrics: Mapping[str, float | bool]) -> str:
    """A three-line Markdown table: header, separator, values (COCO, MPII or DeepLabCut)."""
    header, values = dlc_row(metrics) if "RMSE" in metrics else paper_row(metrics)
    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" for _ in header) + "|",
            "| " + " | ".join(values) + " |",
        ]
    )


def strict_json(record: Mapping[str, Any], indent: int | None = None) -> str:
    """``record`` as standard JSON (RFC 8259), its non-finite floats written as ``null``.

    Python's ``json`` writes NaN as the bare token ``NaN``, which strict readers (jq, JavaScript,
    most JSON libraries) reject; a metric with no value, such as ``RMSE_pcutoff`` when no part
    passes the cutoff, is ``null`` instead, at any depth of nested mappings and lists."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(record), indent=indent, allow_nan=False)
