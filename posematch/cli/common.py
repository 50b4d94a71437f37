"""Shared pieces of the command-line entry points: where the configs live, device choice, and
loading a trained run (its saved config and checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# Packages whose classes a config read from a run folder may name as ``_target_``.
TRUSTED_TARGETS = ("posematch.", "torch.", "torchvision.", "timm.", "albumentations.")


def untrusted_targets(node: Any, where: str = "") -> list[str]:
    """``key: target`` of every ``_target_`` in a plain container that is not a class of
    ``TRUSTED_TARGETS`` (interpolated targets cannot be checked, so they count as untrusted)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{where}.{key}" if where else str(key)
            if key == "_target_" and not (
                isinstance(value, str) and value.startswith(TRUSTED_TARGETS) and "$" not in value
            ):
                found.append(f"{name}: {value!r}")
            else:
                found.extend(untrusted_targets(value, name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(untrusted_targets(value, f"{where}[{i}]"))
    return found


def saved_config(run_dir: str | Path, trust: bool = False) -> DictConfig:
    """The config a ``posematch-train`` run saved (``run_dir/.hydra/config.yaml``), unresolved.

    Interpolations between groups (sizes and joint count from ``data``) resolve on access; the
    ``${hydra:...}`` ones (run_dir, output_dir) are only valid inside the original run.

    A file beside a checkpoint is data, not code: unless ``trust``, a ``_target_`` outside
    ``TRUSTED_TARGETS`` is refused (instantiating it would run whatever it names), as
    ``torch.load(weights_only=True)`` refuses code in the checkpoint itself.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved config; is {run_dir} a posematch-train run?")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # YAML parser errors: name the file
        raise ValueError(f"{path}: unreadable saved config ({err})") from err
    if not trust:
        bad = untrusted_targets(OmegaConf.to_container(cfg, resolve=False))
        if bad:
            raise ValueError(
                f"{path}: refusing to instantiate {', '.join(bad[:5])}: a run folder's config may "
                f"only name classes of {', '.join(p.rstrip('.') for p in TRUSTED_TARGETS)}. If "
                "you wrote this file yourself, pass trust_config=true"
            )
    return cfg


def trained_model(cfg: DictConfig, checkpoint: str | Path) -> torch.nn.Module:
    """``cfg.model`` instantiated with the weights of ``checkpoint`` (``weights_only``, strict), in
    eval mode on the CPU."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint}: file not found")
    model = instantiate(cfg.model)
    load_checkpoint(model, checkpoint)
    return model.eval()
