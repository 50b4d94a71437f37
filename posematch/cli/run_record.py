"""A training run's record: what the run was, written once, and guarded on resume, and
the ``run.json`` facts (``posematch.runinfo``) of train and eval runs.

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
  resume writes the new config beside it as ``config.resumed.yaml``;
- with ``resume`` is refused too when ``optim``, ``schedule`` or the warm-up differ: the optimizer and
  schedule continue from the checkpoint's state, so a new lr would be ignored silently;
  ``resume_force=true`` continues and names each such setting as not applied.
Paths inside the run folder (``run_dir``, ``output_dir`` and the evaluator's files) are where the run
lives, not what it is: a copied or moved run folder resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from posematch.runinfo import RunInfo

log = logging.getLogger("posematch.train")

GUARDED = ("model", "loss", "codec", "data")
# Restored from last.pth on resume, so a changed value would not apply.
NOT_APPLIED = ("optim", "schedule", "trainer.warmup_iters", "trainer.warmup_ratio")


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


def _with_defaults(section: Any) -> Any:
    """A saved config section, each ``_target_`` mapping given its constructor's defaults for the
    options it lacks: a record written before an option existed reads as that option's default,
    so adding an option (off by default) does not refuse the resume of an older run."""
    if isinstance(section, list):
        return [_with_defaults(v) for v in section]
    if not isinstance(section, dict):
        return section
    out = {k: _with_defaults(v) for k, v in section.items()}
    target = out.get("_target_")
    if isinstance(target, str):
        import inspect

        from hydra.utils import get_object

        try:
            params = inspect.signature(get_object(target)).parameters.values()
        except (ImportError, AttributeError, ValueError, TypeError):
            return out  # not importable here: compare as saved
        for p in params:
            if p.name not in out and p.default is not inspect.Parameter.empty:
                if p.default is None or isinstance(p.default, (bool, int, float, str)):
                    out[p.name] = p.default
    return out


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
        loaded = OmegaConf.to_container(OmegaConf.load(record))
    except Exception as err:  # a YAML parser error: name the file
        raise ValueError(f"{record}: unreadable run record ({err})") from err
    if not isinstance(loaded, dict):  # write_record dumps a mapping
        raise ValueError(f"{record}: not a run record (a YAML mapping of the run's config)")
    saved = cast(dict[str, Any], loaded)
    current = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    saved = _moved(saved, str(saved.get("run_dir", "")), str(run_dir))
    # Both sides, so that an option neither config names compares as its default on both.
    saved = {k: _with_defaults(v) if k in GUARDED else v for k, v in saved.items()}
    current = {k: _with_defaults(v) if k in GUARDED else v for k, v in current.items()}
    current = _moved(current, str(current.get("run_dir", "")), str(run_dir))
    changed = [
        key
        for section in GUARDED
        for key in differences(saved.get(section), current.get(section), section)
    ]
    ignored = [
        key
        for name in NOT_APPLIED
        for key in differences(_at(saved, name), _at(current, name), name)
    ]
    if (changed or ignored) and not force:
        shown = _listing(changed + ignored)
        why = (
            "resume it with the same model/loss/codec/data"
            if changed
            else "the optimizer, its lr and the schedule continue from last.pth, so these would "
            "not apply; start a new run (or init_from its weights)"
        )
        raise ValueError(
            f"resume: {run_dir} was trained with another config ({shown} differ from {record}); "
            f"{why}, or pass resume_force=true to continue its weights under the new settings "
            "anyway"
        )
    if ignored and write:
        log.warning(
            "resume_force: %s differ from the run's but are NOT applied: the optimizer and "
            "schedule state come from last.pth",
            _listing(ignored),
        )
    if changed and write:
        log.warning("resume_force: continuing %s with changed %s", run_dir, ", ".join(changed))
    if (changed or ignored) and write:
        (run_dir / "config.resumed.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return True


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - 10} more)" if len(keys) > 10 else ""
    return ", ".join(keys[:10]) + more


def _at(config: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a plain nested dict (None when absent)."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` with every string path under the run folder ``old`` rewritten under ``new``."""
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if old and isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    return value


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


def loss_facts(loss_cfg: Any) -> dict[str, Any] | None:
    """``run.json``'s loss entry from a loss config: the kind from the class's own ``target_kind``
    (what its targets are), the matching loss's options from the built module; None without one."""
    if loss_cfg is None or "_target_" not in loss_cfg:
        return None
    from hydra.utils import instantiate

    loss = instantiate(loss_cfg)
    target_kind: Any = getattr(loss, "target_kind", None)
    kind = {"heatmaps": "mse", "dots": "matching"}.get(target_kind)
    if kind is None:
        return None
    if kind == "matching" and not hasattr(loss, "demanders"):  # same targets, no transport
        kind = "expected_distance"
    facts: dict[str, Any] = {"kind": kind, "target": str(loss_cfg._target_)}
    if kind == "matching":
        facts.update(demanders=str(loss.demanders), max_iters=int(loss.max_iters))
    for option in ("reg", "tol", "pixel_size", "dead_grad"):
        if hasattr(loss, option):
            facts[option] = float(getattr(loss, option))
    # DM-Count's regularisers, only when on: a record from before they existed reads as "off".
    for option, needs in (
        ("mass_weight", None),
        ("mass_target", "mass_weight"),
        ("tv_weight", None),
    ):
        if getattr(loss, needs or option, 0) > 0:
            facts[option] = float(getattr(loss, option))
    return facts


def split_of(data: Any) -> str:
    """The split a data config scores: COCO test-dev (its official image-info file: no
    annotations, the server scores it), a held-out ``test*`` split, else validation."""
    val = data.get("val") or {}
    if str(Path(str(val.get("ann_file", ""))).name).startswith("image_info_test-dev"):
        return "test-dev"
    return "test" if str(data.get("eval_split") or "").startswith("test") else "val"


def model_name(cfg: DictConfig, use_choice: bool = True) -> str:
    """The model config's name (``hrnet_w32``): Hydra's choice (``use_choice``), else the
    backbone class's name."""
    from hydra.core.hydra_config import HydraConfig

    if use_choice and HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model.backbone._target_).rsplit(".", 1)[-1].lower()


def budget_facts(cfg: DictConfig) -> dict[str, Any] | None:
    """``run.json``'s budget of a training config (see ``posematch.runinfo``); None without one."""
    if "trainer" not in cfg or "optim" not in cfg:
        return None
    from posematch.engine import dist

    trainer, optim = cfg.trainer, cfg.optim
    schedule = OmegaConf.to_container(cfg.schedule, resolve=True) if cfg.get("schedule") else None
    if isinstance(schedule, dict):
        schedule = {"name": str(schedule.pop("_target_", "")).rsplit(".", 1)[-1], **schedule}
    head = cfg.model.get("head") or {}
    return {
        "epochs": int(trainer.epochs),
        "steps_per_epoch": trainer.get("max_steps_per_epoch"),
        "batch_size": int(trainer.batch_size),
        "processes": dist.world_size(),
        "optimizer": str(optim.optimizer._target_).rsplit(".", 1)[-1],
        "lr": float(optim.optimizer.lr),
        "schedule": schedule,
        "warmup_iters": int(trainer.get("warmup_iters") or 0),
        "activation": str(head.get("activation", "none")),
        # A smoke run's validation on a subset: recorded only when set, so tables keep it apart.
        **({"max_val_instances": int(n)} if (n := trainer.get("max_val_instances")) else {}),
    }


def run_info(
    cfg: DictConfig,
    kind: str,
    loss_cfg: Any = None,
    checkpoint: str | None = None,
    model: str | None = None,
    budget: dict[str, Any] | None = None,
) -> RunInfo:
    """The ``run.json`` facts of a train or eval config (``loss_cfg``: the loss that trained the
    model, default the config's own; ``model``: its model config's name, default ``model_name``)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        posematch_version = version("posematch")
    except PackageNotFoundError:
        posematch_version = "unknown"
    data = cfg.data
    codec = cfg.codec
    return RunInfo(
        kind=kind,
        dataset=str(data.name),
        split=split_of(data),
        boxes=str(data.val.boxes) if data.val.get("boxes") is not None else None,
        model=model or model_name(cfg),
        # RunInfo checks that there are two.
        input_size=cast(tuple[int, int], tuple(int(v) for v in data.input_size)),
        loss=loss_facts(cfg.get("loss") if loss_cfg is None else loss_cfg),
        codec={"target": str(codec._target_), "decoder": str(codec.get("decoder", ""))},
        seed=int(cfg.trainer.seed) if kind == "train" and "trainer" in cfg else None,
        budget=budget if kind == "eval" else budget_facts(cfg),
        checkpoint=checkpoint,
        versions={
            "posematch": posematch_version,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
