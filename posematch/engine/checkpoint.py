"""Training checkpoints: atomic writes, code-free loading, and the full resume state.

A checkpoint is a dict of tensors and plain Python values only (``torch.load(weights_only=True)``
reads it without executing code): ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts,
``epoch`` (epochs completed), ``best`` (best validation metric so far), ``rng`` (torch CPU and CUDA
generator states) and ``history`` (the per-epoch training losses). Files are written to a temporary
name in the same folder and renamed, so a crash never leaves a half-written ``last.pth``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, cast

import torch


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# What ``fit`` writes into last.pth and needs back to resume.
RESUME_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "warmup",
    "scaler",
    "epoch",
    "step",
    "best",
    "history",
    "rng",
)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without executing code; errors name the file and say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path}: empty file (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {path}: refused by torch.load(weights_only=True) ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {path}: not a PyTorch checkpoint, or truncated ({err})"
        ) from err


def load_resume_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint (``last.pth``) with every entry ``fit`` needs to resume."""
    state = load(path, map_location)
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"resume={path}: not a training checkpoint of this posematch version (no "
            f"{', '.join(missing)}): an older version's last.pth cannot resume (start the run "
            "anew), and a file of weights alone starts a run through model.init_from"
        )
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel, so keys carry no ``module.`` prefix."""
    return cast(torch.nn.Module, model.module) if hasattr(model, "module") else model
