"""DeepLabCut label files (``CollectedData*.csv``): their header rows and frames, each error naming
the file, the line and the column (the package docstring has the layout)."""

from __future__ import annotations

import csv
import logging
import math
import os
import posixpath
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class DlcFormatError(ValueError):
    """A project file that cannot be used; the message names the file, line and column."""


@dataclass(frozen=True)
class LabelledFrame:
    """One labelled frame.

    path: image path relative to the project folder, '/'-separated. keypoints: (K, 2) float64,
    (x, y) image pixels, NaN where the part was not labelled (at least one part is labelled).
    source: ``<csv file>: line <n>``, for messages.
    """

    path: str
    keypoints: np.ndarray
    source: str


@dataclass(frozen=True)
class _Header:
    """A CSV header: index cells per row, and the body part of each (x, y) column pair."""

    n_index: int
    n_cells: int
    parts: tuple[str, ...]  # the body part of each column pair, in file order
    lines: int  # header rows


def _where(path: str, line: int, column: int | None = None, what: str = "") -> str:
    col = "" if column is None else f", column {column}"
    return f"{path}: line {line}{col}{f' ({what})' if what else ''}"


def _parse_header(rows: list[tuple[int, list[str]]], path: str) -> _Header:
    """The header rows of a label file (see the module docstring)."""
    if not rows:
        raise DlcFormatError(
            f"{_where(path, 1, 1)}: empty file, expected the header rows scorer/bodyparts/coords"
        )
    names = ["scorer", "bodyparts", "coords"]
    if len(rows) > 1 and rows[1][1][:1] and rows[1][1][0].strip() == "individuals":
        names = ["scorer", "individuals", "bodyparts", "coords"]
    for i, name in enumerate(names):
        if i >= len(rows):
            raise DlcFormatError(f"{_where(path, i + 1, 1)}: the header row {name!r} is missing")
        line, cells = rows[i]
        if not cells or cells[0].strip() != name:
            found = cells[0] if cells else ""
            raise DlcFormatError(
                f"{_where(path, line, 1)}: expected the header row {name!r}, found {found!r}"
            )
    scorer_line, scorer = rows[0]
    n_index = next((j for j in range(1, len(scorer)) if scorer[j].strip()), len(scorer))
    n_cells = len(scorer)
    if n_index >= n_cells:
        raise DlcFormatError(f"{_where(path, scorer_line)}: no scorer columns")
    for i in range(1, len(names)):
        line, cells = rows[i]
        if len(cells) != n_cells:
            raise DlcFormatError(
                f"{_where(path, line, min(len(cells), n_cells) + 1)}: {len(cells)} cells, the "
                f"'scorer' row has {n_cells}"
            )
    if (n_cells - n_index) % 2:
        raise DlcFormatError(
            f"{_where(path, scorer_line)}: {n_cells - n_index} data columns, not (x, y) pairs"
        )
    parts = _header_parts(rows[len(names) - 2], rows[len(names) - 1], n_index, path)
    if "individuals" in names:
        line, cells = rows[1]
        names_seen = [c.strip() for c in cells[n_index:]]
        other = next((j for j, c in enumerate(names_seen) if c != names_seen[0]), None)
        if other is not None:
            raise DlcFormatError(
                f"{_where(path, line, n_index + other + 1)}: individual {names_seen[other]!r} after "
                f"{names_seen[0]!r}; only single-animal projects are supported (one individual, "
                f"this file has {sorted(set(names_seen))})"
            )
    return _Header(n_index, n_cells, tuple(parts), len(names))


def _header_parts(
    parts_row: tuple[int, list[str]], coords_row: tuple[int, list[str]], n_index: int, path: str
) -> list[str]:
    """The body part of each (x, y) column pair, from the ``bodyparts`` and ``coords`` header rows
    (line number, cells); DlcFormatError naming the cell otherwise."""
    (parts_line, names), (coords_line, coords) = parts_row, coords_row
    parts: list[str] = []
    for j in range(n_index, len(coords), 2):
        for col, want in ((j, "x"), (j + 1, "y")):
            if coords[col].strip() != want:
                raise DlcFormatError(
                    f"{_where(path, coords_line, col + 1)}: expected {want!r}, found "
                    f"{coords[col]!r} (a label file holds x, y per body part)"
                )
        part = names[j].strip()
        if not part or names[j + 1].strip() != part:
            raise DlcFormatError(
                f"{_where(path, parts_line, j + 2)}: the y column names body part "
                f"{names[j + 1]!r}, its x column {names[j]!r}"
            )
        if part in parts:
            raise DlcFormatError(f"{_where(path, parts_line, j + 1)}: body part {part!r} repeated")
        parts.append(part)
    return parts


def _cell_value(cell: str, where: str) -> float:
    """A coordinate cell: NaN when empty, DlcFormatError when not a finite number."""
    text = cell.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DlcFormatError(f"{where}: {cell!r} is not a number") from None
    if math.isinf(value):
        raise DlcFormatError(f"{where}: {cell!r} is not a finite number")
    return value


def _parse_row(
    cells: list[str], line: int, header: _Header, columns: np.ndarray, k: int, path: str, root: str
) -> LabelledFrame | None:
    """One data row; None when it labels no part; DlcFormatError when malformed."""
    if len(cells) != header.n_cells:
        raise DlcFormatError(
            f"{_where(path, line, min(len(cells), header.n_cells) + 1)}: {len(cells)} cells, "
            f"the header has {header.n_cells}"
        )
    index = [c.strip().replace("\\", "/") for c in cells[: header.n_index]]
    frame = posixpath.normpath("/".join(c for c in index if c)) if any(index) else ""
    if not frame or frame.startswith("../") or posixpath.isabs(frame):
        raise DlcFormatError(
            f"{_where(path, line, 1, 'image path')}: {'/'.join(index)!r} is not a path inside "
            "the project folder"
        )
    keypoints = np.full((k, 2), np.nan)
    for p, part in enumerate(header.parts):
        col = header.n_index + 2 * p
        x = _cell_value(cells[col], _where(path, line, col + 1, f"{part} x"))
        y = _cell_value(cells[col + 1], _where(path, line, col + 2, f"{part} y"))
        if math.isnan(x) != math.isnan(y):
            empty, full = (col + 1, col + 2) if math.isnan(x) else (col + 2, col + 1)
            axis, other = ("x", "y") if math.isnan(x) else ("y", "x")
            raise DlcFormatError(
                f"{_where(path, line, empty, f'{part} {axis}')}: empty, but its {other} "
                f"(column {full}) holds a value; a part is labelled with both or neither"
            )
        keypoints[columns[p]] = (x, y)
    if np.isnan(keypoints).all():
        return None
    if not os.path.isfile(os.path.join(root, frame)):
        raise DlcFormatError(
            f"{_where(path, line, 1, 'image path')}: frame {frame!r} does not exist in {root}"
        )
    return LabelledFrame(frame, keypoints, _where(path, line))


def read_label_file(
    path: str, root: str, bodyparts: list[str], fixed: bool, skip_bad: bool = False
) -> tuple[list[LabelledFrame], int, list[str]]:
    """Frames of one label file, the count of unlabelled rows, and the malformed rows skipped.

    bodyparts: the joint order; with ``fixed`` (from config.yaml) a header part outside it is an
    error, otherwise new parts are appended to it (in place). skip_bad: skip and list
    a malformed data row instead of raising (header errors always raise).
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DlcFormatError(f"{path}: cannot read the label file ({err})") from err
    header = _parse_header(rows, path)
    parts_line = rows[header.lines - 2][0]
    for j, part in enumerate(header.parts):
        if part not in bodyparts:
            if fixed:
                col = header.n_index + 2 * j + 1
                raise DlcFormatError(
                    f"{_where(path, parts_line, col)}: body part {part!r} is not in config.yaml's "
                    f"bodyparts {list(bodyparts)}"
                )
            bodyparts.append(part)
    columns = np.array([bodyparts.index(p) for p in header.parts], dtype=np.int64)
    frames: list[LabelledFrame] = []
    unlabelled = 0
    bad: list[str] = []
    for line, cells in rows[header.lines :]:
        if not any(c.strip() for c in cells):
            continue  # a blank line
        try:
            frame = _parse_row(cells, line, header, columns, len(bodyparts), path, root)
        except DlcFormatError as err:
            if not skip_bad:
                raise
            log.warning("skipping: %s", err)
            bad.append(str(err))
            continue
        if frame is None:
            unlabelled += 1
        else:
            frames.append(frame)
    return frames, unlabelled, bad
