"""Shared pieces of the command-line entry points: where the configs live, device choice, and
loading a trained run (its saved config and checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posematch.models.checkpoints import load_checkpoint

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


def saved_config(run_dir: str | Path) -> DictConfig:
    """The config a ``posematch-train`` run saved (``run_dir/.hydra/config.yaml``), unresolved.

    Interpolations between groups (sizes and joint count from ``data``) resolve on access; the
    ``${hydra:...}`` ones (run_dir, output_dir) are only valid inside the original run.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved config; is {run_dir} a posematch-train run?")
    return OmegaConf.load(path)


def trained_model(cfg: DictConfig, checkpoint: str | Path) -> torch.nn.Module:
    """``cfg.model`` instantiated with the weights of ``checkpoint`` (``weights_only``, strict), in
    eval mode on the CPU."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint}: file not found")
    model = instantiate(cfg.model)
    load_checkpoint(model, checkpoint)
    return model.eval()
