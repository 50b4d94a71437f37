"""Shared pieces of the command-line entry points: where the configs live and device choice. Loading
a trained run (its saved config, checked, and its checkpoint) lives in ``posematch.predictor``,
re-exported here for the commands."""

from __future__ import annotations

from pathlib import Path

import torch

from posematch.predictor import (  # noqa: F401  (the commands' imports)
    TRUSTED_TARGETS,
    checkpoint_holds_every_weight,
    run_test_time,
    saved_config,
    trained_model,
    untrusted_targets,
)

# conf/ sits beside the package in the source tree (editable install). Elsewhere, pass
# --config-dir /path/to/conf on the command line.
_CONF = Path(__file__).resolve().parents[2] / "conf"
CONFIG_PATH: str | None = str(_CONF) if _CONF.is_dir() else None


def resolve_device(name: str, local: torch.device) -> torch.device:
    """``auto`` -> the device torchrun / dist.init chose; ``cpu`` / ``cuda`` as asked."""
    if name == "auto":
        return local
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda: CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: expected auto, cpu or cuda")
    return local if name == "cuda" else torch.device("cpu")
