"""Shared test helpers: independent float64 references written here, not in posematch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The small real COCO / MPII samples: $POSEMATCH_SHARED_DATA, ../shared/data beside the checkout,
    or the workplace's /work/shared/data (CI clones may live elsewhere)."""
    candidates = [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("POSEMATCH_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["POSEMATCH_SHARED_DATA"]))
    for path in candidates:
        if (path / "coco_sample").is_dir():
            return path
    raise FileNotFoundError(
        "shared test data not found; set POSEMATCH_SHARED_DATA to the folder holding coco_sample/ "
        f"and mpii_sample/ (looked in: {', '.join(map(str, candidates))})"
    )


SHARED_DATA = _shared_data()


def pixel_centres(h: int, w: int) -> np.ndarray:
    """(h*w, 2) pixel centres (x=j, y=i) in row-major order."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


def demanders_reference(dot: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The paper's demanders, written from the definition in float64."""
    x, y = float(dot[0]), float(dot[1])
    if mode == "naive":
        return np.array([[np.floor(x + 0.5), np.floor(y + 0.5)]]), np.array([1.0])
    x0, y0 = np.floor(x), np.floor(y)
    pos = np.array([[x0, y0], [x0 + 1, y0], [x0, y0 + 1], [x0 + 1, y0 + 1]])
    masses = (1 - np.abs(x - pos[:, 0])) * (1 - np.abs(y - pos[:, 1]))
    return pos, masses


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def model_config(path: Path, num_keypoints: int = 17):
    """A ``conf/model/*.yaml`` on its own: its head's joint count (``${data.num_keypoints}``) is
    given as a data config would give it (COCO's 17 by default)."""
    from omegaconf import OmegaConf

    root = OmegaConf.create({"data": {"num_keypoints": num_keypoints}})
    root.model = OmegaConf.load(path)
    root.model.pretrained = None  # shapes and counts only: ImageNet loads are tested on their own
    return root.model
