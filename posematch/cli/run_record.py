"""A training run's record: what the run was, written once, and guarded on resume (issue 11).

``posematch-train`` writes into its run folder ``config.yaml`` (the resolved config) and
``.hydra/{config,overrides,hydra}.yaml`` (the composed config, the command-line overrides and Hydra's
own settings, as Hydra would write them) when the folder does not hold a run yet. Hydra's own
writing of ``.hydra/`` is off (``hydra.output_subdir: null`` in ``train.yaml``): it would rewrite
those files at every start, before any check, and a resumed run would lose what it was.

A folder *holds a run* once it has ``last.pth`` or ``metrics.jsonl``. Starting in such a folder
- without ``resume`` is refused (it would train from scratch over the run's files);
- with ``resume`` is refused when the saved ``model``, ``loss``, ``codec`` or ``data`` differ from the
  command's (the weights would continue under another loss or data and ``metrics.jsonl`` would mix
  both), unless ``resume_force=true``; the original record is kept either way, and a forced
  resume writes the new config beside it as ``config.resumed.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("posematch.train")

GUARDED = ("model", "loss", "codec", "data")


def holds_run(run_dir: Path) -> bool:
    return (run_dir / "last.pth").is_file() or (run_dir / "metrics.jsonl").is_file()


def differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain nested containers."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(name)
            else:
                out.extend(differences(saved[key], current[key], name))
        return out
    return [] if saved == current else [prefix]


def check_resume(
    cfg: DictConfig, run_dir: Path, resume: bool, force: bool, write: bool = True
) -> bool:
    """Whether the folder already holds a run (so its record stays); raise ValueError when
    starting here would overwrite or mix it (see the module docstring). ``write``: this process
    writes ``config.resumed.yaml`` (rank 0)."""
    if not holds_run(run_dir):
        return False
    if not resume:
        raise ValueError(
            f"hydra.run.dir={run_dir} already holds a run (last.pth / metrics.jsonl): pass "
            "resume=auto to continue it, or choose another hydra.run.dir"
        )
    record = run_dir / "config.yaml"
    if not record.is_file():
        raise ValueError(f"{record}: missing, so resuming cannot check what the run was")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(record))
    except Exception as err:  # a YAML parser error: name the file
        raise ValueError(f"{record}: unreadable run record ({err})") from err
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = [
        key
        for section in GUARDED
        for key in differences(saved.get(section), current.get(section), section)
    ]
    if changed and not force:
        shown = ", ".join(changed[:10]) + (
            f" (+{len(changed) - 10} more)" if len(changed) > 10 else ""
        )
        raise ValueError(
            f"resume: {run_dir} was trained with another config ({shown} differ from {record}); "
            "resume it with the same model/loss/codec/data, or pass resume_force=true to continue "
            "its weights under the new settings anyway"
        )
    if changed and write:
        log.warning("resume_force: continuing %s with changed %s", run_dir, ", ".join(changed))
        (run_dir / "config.resumed.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return True


def write_record(cfg: DictConfig, run_dir: Path) -> None:
    """``config.yaml`` (resolved) and ``.hydra/{config,overrides,hydra}.yaml`` of a new run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))
        (hydra_dir / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))
