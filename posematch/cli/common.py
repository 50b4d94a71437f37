"""Shared pieces of the command-line entry points: where the configs live, device choice, the
boolean and test-time options, and the output folder. Loading a trained run (its saved config,
checked) lives in ``posematch.predictor``; building its parts in ``posematch.build``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# conf/ sits beside the package in the source tree (editable install). Elsewhere, pass
# --config-dir /path/to/conf on the command line.
_CONF = Path(__file__).resolve().parents[2] / "conf"
CONFIG_PATH: str | None = str(_CONF) if _CONF.is_dir() else None


def settle_output_dir(cfg: DictConfig) -> None:
    """Tie ``output_dir`` and Hydra's run folder together both ways. The config sets
    ``hydra.run.dir: ${output_dir}`` (so ``output_dir=X`` puts the log there too and nothing in
    ./outputs); when only ``hydra.run.dir=X`` is given, ``output_dir`` becomes X here."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    given = {o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task}
    if "output_dir" not in given:
        with open_dict(cfg):
            cfg.output_dir = hydra_cfg.runtime.output_dir


def resolve_device(name: str, local: torch.device) -> torch.device:
    """``auto`` -> the device torchrun / dist.init chose; ``cpu`` / ``cuda`` as asked."""
    if name == "auto":
        return local
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda: CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: expected auto, cpu or cuda")
    return local if name == "cuda" else torch.device("cpu")


def flag(cfg: Any, key: str, default: bool = False) -> bool:
    """The boolean option ``key`` of a command's config (``default`` when absent); ValueError
    naming it for anything but true / false (``bool("false")`` would be true)."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: expected true or false")
    return value


@dataclass(frozen=True)
class TestTimeOptions:
    """The ``test`` config group, checked: the flip test and its 1 px shift (booleans), crops per
    forward pass (``batch_size`` >= 1) and loader workers (``num_workers`` >= 0)."""

    flip: bool = True
    shift: bool = True
    batch_size: int = 32
    num_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("flip", "shift"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"test.{name}={getattr(self, name)!r}: expected true or false")
        for name, low in (("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"test.{name}={value!r}: expected an integer >= {low}")

    @classmethod
    def from_config(cls, test: Any) -> TestTimeOptions:
        """From the ``test`` group (a DictConfig or mapping); unknown keys are named."""
        values = dict(test or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"test.{unknown[0]}: not a test option ({', '.join(cls.__dataclass_fields__)})"
            )
        return cls(**values)
