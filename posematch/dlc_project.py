"""DeepLabCut project folders: labelled frames, body parts and the train / test split.

A leaf shared by ``posematch.data.dlc`` (the dataset) and ``posematch.evaluation.dlc`` (its
evaluator), which must see the same frames in the same order; it imports nothing of posematch.

Layout (paths relative to the project folder):
- ``config.yaml`` (optional): ``bodyparts`` (the joint order; ``multianimalbodyparts`` +
  ``uniquebodyparts`` in a multi-animal project) and ``pcutoff``;
- ``labeled-data/<video>/CollectedData_<scorer>.csv`` (DeepLabCut) and / or ``CollectedData*.csv``
  at the root (lightning-pose).

CSV (what pandas ``to_csv`` writes for DeepLabCut's frame): the header rows ``scorer``,
[``individuals`` (multi-animal layout; one individual only)], ``bodyparts``, ``coords`` (``x``, ``y``
per body part), then one row per frame: the image path relative to the project folder (one cell,
or the three cells ``labeled-data``, ``<video>``, ``<file>`` of newer DeepLabCut files) and x, y in
image pixels. An empty cell (or ``NaN``) is a part that was not labelled.

A malformed file is a ``DlcFormatError`` naming the file, the line (1-based, as a text editor shows
it) and the column (1-based): a missing or wrong header row, a body part that ``config.yaml`` does
not list, a frame absent from disk, a value that is not a finite number, an x without its y, a frame
labelled twice. Rows with no labelled part are skipped and counted (they carry no target).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

log = logging.getLogger(__name__)

DEFAULT_PCUTOFF = 0.6  # DeepLabCut's default ``pcutoff`` when config.yaml has none
SPLITS = ("train", "test")


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
class DlcProject:
    """A project's labels.

    root: the project folder. bodyparts: the K joint names in order. frames: every labelled frame,
    sorted by ``path`` (a frame's position here is its image id). pcutoff: config.yaml's, or None.
    csv_files: the label files read. unlabelled_rows: rows skipped for having no labelled part.
    bad_rows: rows skipped as malformed under ``skip_bad`` (their messages).
    """

    root: str
    bodyparts: tuple[str, ...]
    frames: tuple[LabelledFrame, ...]
    pcutoff: float | None
    csv_files: tuple[str, ...]
    unlabelled_rows: int = 0
    bad_rows: tuple[str, ...] = ()


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


def read_config(root: str) -> dict:
    """``config.yaml`` of the project as a dict ({} when there is none)."""
    path = os.path.join(root, "config.yaml")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise DlcFormatError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, dict):
        raise DlcFormatError(f"{path}: expected a mapping of settings")
    return cfg


def config_bodyparts(cfg: dict, path: str) -> tuple[str, ...] | None:
    """The joint order of a config.yaml dict, or None when it names none."""
    parts: object  # whatever the YAML holds; checked below
    if cfg.get("multianimalproject"):
        parts = list(cfg.get("multianimalbodyparts") or []) + list(cfg.get("uniquebodyparts") or [])
    else:
        parts = cfg.get("bodyparts")
    if parts is None:
        return None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise DlcFormatError(f"{path}: 'bodyparts' is {parts!r}, not a list of names")
    if len(set(parts)) != len(parts):
        raise DlcFormatError(f"{path}: 'bodyparts' repeats a name ({parts})")
    return tuple(parts)


def find_label_files(root: str) -> list[str]:
    """``labeled-data/*/CollectedData_*.csv`` and ``CollectedData*.csv`` at the root, sorted."""
    base = Path(root)
    files = sorted(base.glob("labeled-data/*/CollectedData_*.csv")) + sorted(
        base.glob("CollectedData*.csv")
    )
    return [str(f) for f in files]


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
    coords_line, coords = rows[len(names) - 1]
    parts_line, parts_row = rows[len(names) - 2]
    parts: list[str] = []
    for j in range(n_index, n_cells, 2):
        for col, want in ((j, "x"), (j + 1, "y")):
            if coords[col].strip() != want:
                raise DlcFormatError(
                    f"{_where(path, coords_line, col + 1)}: expected {want!r}, found "
                    f"{coords[col]!r} (a label file holds x, y per body part)"
                )
        part = parts_row[j].strip()
        if not part or parts_row[j + 1].strip() != part:
            raise DlcFormatError(
                f"{_where(path, parts_line, j + 2)}: the y column names body part "
                f"{parts_row[j + 1]!r}, its x column {parts_row[j]!r}"
            )
        if part in parts:
            raise DlcFormatError(f"{_where(path, parts_line, j + 1)}: body part {part!r} repeated")
        parts.append(part)
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


def read_project(root: str, skip_bad: bool = False) -> DlcProject:
    """Read a project folder (see the module docstring).

    skip_bad: skip and list malformed data rows (a frame missing on disk, a bad value) instead of
    raising; header errors and frames labelled twice always raise.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"project={root}: folder not found")
    cfg = read_config(root)
    fixed = config_bodyparts(cfg, os.path.join(root, "config.yaml"))
    files = find_label_files(root)
    if not files:
        raise DlcFormatError(
            f"project={root}: no label file (labeled-data/*/CollectedData_*.csv or a "
            "CollectedData*.csv at the root)"
        )
    bodyparts: list[str] = list(fixed or [])
    frames: list[LabelledFrame] = []
    unlabelled = 0
    bad: list[str] = []
    for path in files:
        got, n_unlabelled, n_bad = read_label_file(
            path, root, bodyparts, fixed is not None, skip_bad
        )
        frames += got
        unlabelled += n_unlabelled
        bad += n_bad
    k = len(bodyparts)
    frames = [  # files read before a new part appeared (no config.yaml) lack its column
        f if f.keypoints.shape[0] == k else _pad(f, k) for f in frames
    ]
    seen: dict[str, str] = {}
    for frame in frames:
        if frame.path in seen:
            raise DlcFormatError(
                f"{frame.source}, column 1 (image path): frame "
                f"{frame.path!r} is labelled twice (also {seen[frame.path]})"
            )
        seen[frame.path] = frame.source
    if unlabelled:
        log.info("%s: skipped %d rows with no labelled part", root, unlabelled)
    pcutoff = cfg.get("pcutoff")
    if pcutoff is not None and (isinstance(pcutoff, bool) or not isinstance(pcutoff, int | float)):
        raise DlcFormatError(
            f"{os.path.join(root, 'config.yaml')}: 'pcutoff' {pcutoff!r} is not a number"
        )
    return DlcProject(
        root=root,
        bodyparts=tuple(bodyparts),
        frames=tuple(sorted(frames, key=lambda f: f.path)),
        pcutoff=None if pcutoff is None else float(pcutoff),
        csv_files=tuple(files),
        unlabelled_rows=unlabelled,
        bad_rows=tuple(bad),
    )


def _pad(frame: LabelledFrame, k: int) -> LabelledFrame:
    keypoints = np.full((k, 2), np.nan)
    keypoints[: frame.keypoints.shape[0]] = frame.keypoints
    return LabelledFrame(frame.path, keypoints, frame.source)


def split_indices(
    n: int,
    split: str,
    train_fraction: float = 0.95,
    num_folds: int = 0,
    fold: int = 0,
    split_seed: int = 0,
) -> np.ndarray:
    """Positions (sorted) of the frames of ``split`` among ``n`` frames sorted by path.

    The frames are permuted with ``numpy.random.default_rng(split_seed)``. With ``num_folds=0``
    the first ``floor(n * train_fraction)`` of the permutation are ``train`` and the rest ``test``
    (DeepLabCut's ``SplitTrials``: ``int(n * fraction)``, default fraction 0.95); with
    ``num_folds=k >= 2`` the permutation is cut into k near-equal folds (``numpy.array_split``),
    fold ``fold`` is ``test`` and the others ``train``. The split depends on (n, seed, fraction or
    fold) only, never on the order files are found in.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if n < 1:
        raise ValueError("split_indices: no frames to split")
    order = np.random.default_rng(split_seed).permutation(n)
    if num_folds == 0:
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction={train_fraction}: expected a value in (0, 1]")
        n_train = math.floor(n * train_fraction + 1e-9)  # 1e-9: 0.29 * 100 is 28.99...
        chosen = order[:n_train] if split == "train" else order[n_train:]
    else:
        if num_folds < 2 or num_folds > n:
            raise ValueError(f"num_folds={num_folds}: expected 0 or 2..{n} (the frame count)")
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold={fold}: expected 0..{num_folds - 1}")
        folds = np.array_split(order, num_folds)
        if split == "test":
            chosen = folds[fold]
        else:
            chosen = np.concatenate([f for i, f in enumerate(folds) if i != fold])
    return np.sort(chosen)


def project_split(
    project: DlcProject,
    root: str,
    names: Sequence[str] | None,
    split: str,
    train_fraction: float = 0.95,
    num_folds: int = 0,
    fold: int = 0,
    split_seed: int = 0,
) -> np.ndarray:
    """``split_indices`` of a read project, after checking that ``names`` (a spec's joint names;
    None skips the check) are its body parts in order; a split without frames is an error."""
    if names is not None and tuple(names) != project.bodyparts:
        raise ValueError(
            f"spec names {list(names)}, but project={root} has the body parts "
            f"{list(project.bodyparts)}: data.spec.names must list them in order"
        )
    ids = split_indices(len(project.frames), split, train_fraction, num_folds, fold, split_seed)
    if ids.size == 0:
        raise ValueError(
            f"project={root}: split {split!r} has no frames (train_fraction={train_fraction}, "
            f"num_folds={num_folds}, {len(project.frames)} frames)"
        )
    return ids


def labelled_box(keypoints: np.ndarray) -> np.ndarray:
    """(x, y, w, h) image pixels: the tight box around the labelled (non-NaN) points of (K, 2)."""
    pts = np.asarray(keypoints, dtype=np.float64)
    pts = pts[~np.isnan(pts).any(axis=1)]
    if pts.shape[0] == 0:
        raise ValueError("labelled_box: no labelled point")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
