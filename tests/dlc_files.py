"""Hand-written DeepLabCut projects for the tests: a config.yaml, tiny PNG frames and label CSVs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

PARTS = ("snout", "leftear", "rightear", "tailbase")


def write_frame(path: Path, width: int = 64, height: int = 48, ext: str = ".png") -> Path:
    """A small grey-gradient image at ``path`` (its parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (np.arange(width) % 256).astype(np.uint8)[None, :, None]
    assert cv2.imwrite(str(path.with_suffix(ext)), image)
    return path


def write_project(
    root: Path,
    csv_text: str,
    csv_path: str = "labeled-data/v1/CollectedData_Me.csv",
    parts: tuple[str, ...] | None = PARTS,
    pcutoff: float | None = None,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """A project at ``root``: config.yaml (``bodyparts`` = ``parts``; none when None), the label
    file ``csv_path`` holding ``csv_text``, and a PNG for every frame the CSV names (first cell, or
    the three index cells of the newer layout). Returns the CSV's path."""
    root.mkdir(parents=True, exist_ok=True)
    if parts is not None:
        lines = ["Task: test", "scorer: Me", "bodyparts:", *[f"- {p}" for p in parts]]
        if pcutoff is not None:
            lines.append(f"pcutoff: {pcutoff}")
        (root / "config.yaml").write_text("\n".join(lines) + "\n")
    path = root / csv_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text)
    for row in csv.reader(io.StringIO(csv_text)):
        if not row or not row[0].startswith("labeled-data"):
            continue
        rel = row[0] if row[0].endswith(".png") else "/".join(row[:3])
        if not (root / rel).exists():
            write_frame(root / rel, *size)
    return path
