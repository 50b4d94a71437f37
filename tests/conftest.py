"""Shared test helpers: independent float64 references written here, not in posematch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
