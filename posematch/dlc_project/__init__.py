"""DeepLabCut project folders: labelled frames, body parts and the train / test split.

A leaf shared by ``posematch.data.dlc`` (the dataset) and ``posematch.evaluation.dlc`` (its
evaluator), which must see the same frames in the same order; it imports nothing of posematch
outside itself (``labels`` reads the CSV files).

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

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from posematch.dlc_project.labels import DlcFormatError, LabelledFrame, read_label_file

log = logging.getLogger(__name__)

DEFAULT_PCUTOFF = 0.6  # DeepLabCut's default ``pcutoff`` when config.yaml has none
SPLITS = ("train", "test")


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
