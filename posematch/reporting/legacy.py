"""Runs made before ``run.json``: their data set, model, input size and loss read from the Hydra
files they kept (``.hydra/config.yaml``, ``.hydra/hydra.yaml``), and for a ``posematch-eval`` folder
from the config of its checkpoint's run directory or the experiment's name. Newer runs never come
here (``posematch.reporting.runs``). The only reporting module that reads OmegaConf."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from posematch.reporting.metrics import printed_values, read_metrics_json, training_validation
from posematch.reporting.results import (
    DEFAULT_DEMANDERS,
    DEFAULT_MAX_ITERS,
    MATCHING,
    MSE,
    Loss,
    Result,
    Setting,
    TablesError,
    is_run,
)

log = logging.getLogger("posematch.tables")

# Words in data.val.ann_file / image_dir that mark the COCO test-dev split (image_info_test-dev2017.json,
# test2017/ images).
TEST_DEV_MARKS = ("test-dev", "testdev", "test_dev", "test2017")


def _select(cfg: DictConfig, key: str, where: Path) -> Any:
    """``cfg.<key>`` or None when absent; an interpolation that cannot resolve names the file."""
    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception as err:  # omegaconf raises several resolution errors
        raise TablesError(f"{where}: cannot read {key} ({err})") from err
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def _load_yaml(path: Path) -> DictConfig:
    """A YAML file as a DictConfig; a broken file is named."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml's parser errors and OSError alike
        raise TablesError(f"{path}: not a readable YAML config ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise TablesError(f"{path}: expected a mapping at the top level")
    return cfg


def read_choices(run: Path) -> dict[str, Any]:
    """``hydra.runtime.choices`` of the run (which config of each group was picked)."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        raise TablesError(f"{path}: missing (its hydra.runtime.choices.model names the model)")
    choices = _select(_load_yaml(path), "hydra.runtime.choices", path)
    return choices if isinstance(choices, dict) else {}


def read_setting(run: Path, cfg: DictConfig, choices: dict[str, Any]) -> Setting:
    """Data set, model config name and input size of a run."""
    where = run / ".hydra" / "config.yaml"
    model = choices.get("model")
    dataset = _select(cfg, "data.name", where)
    size = _select(cfg, "data.input_size", where)
    if not model:
        raise TablesError(f"{run / '.hydra' / 'hydra.yaml'}: no hydra.runtime.choices.model")
    if not dataset:
        raise TablesError(f"{where}: no data.name")
    if not (isinstance(size, list) and len(size) == 2):
        raise TablesError(f"{where}: data.input_size={size!r}, expected [width, height]")
    return Setting(str(dataset), str(model), (int(size[0]), int(size[1])))


def _loss_from(cfg: DictConfig, where: Path) -> Loss | None:
    """The loss of a training config, None when it has no ``loss`` or an unknown one."""
    target = _select(cfg, "loss._target_", where)
    if target is None:
        return None
    name = str(target).rsplit(".", 1)[-1]
    if name == "JointsMSELoss":
        return MSE
    if name == "SinkhornMatchingLoss":
        demanders = _select(cfg, "loss.demanders", where) or DEFAULT_DEMANDERS
        max_iters = _select(cfg, "loss.max_iters", where) or DEFAULT_MAX_ITERS
        return Loss("matching", str(demanders), int(max_iters))
    log.warning("%s: loss._target_=%s is neither the matching loss nor MSE: skipped", where, target)
    return None


def read_loss(run: Path, cfg: DictConfig, choices: dict, checkpoint: Any) -> Loss | None:
    """The loss that trained the run's model.

    A training run's own config says; a ``posematch-eval`` folder has no loss, so the saved config
    of its checkpoint's run directory says (a relative checkpoint path is taken from the current
    directory, where posematch-eval ran), else an experiment name ending in _sinkhorn / _mse.
    """
    if _select(cfg, "loss", run) is not None:
        return _loss_from(cfg, run / ".hydra" / "config.yaml")
    loss = None
    source = Path(str(checkpoint)).parent if checkpoint else None
    if source is not None and is_run(source):
        loss = _loss_from(_load_yaml(source / ".hydra" / "config.yaml"), source)
    experiment = str(choices.get("experiment") or "")
    if loss is None and experiment.endswith("_sinkhorn"):
        loss = MATCHING
    if loss is None and experiment.endswith("_mse"):
        loss = MSE
    return loss


def is_test_dev(data: Any) -> bool:
    """Whether a data config evaluates on COCO test-dev (its val annotations or images say so)."""
    val = data.get("val") if isinstance(data, dict) else None
    if not isinstance(val, dict):
        return False
    text = " ".join(str(val.get(key, "")) for key in ("ann_file", "image_dir")).lower()
    return any(mark in text for mark in TEST_DEV_MARKS)


def _boxes(data: Any) -> str:
    """ ", det boxes" / ", gt boxes" for a COCO-style data config; nothing for MPII."""
    boxes = data.get("boxes") if isinstance(data, dict) else None
    return f", {boxes} boxes" if isinstance(boxes, str) else ""


def read_run(run: Path, order: int) -> list[Result]:
    """The results of a run without ``run.json``: its validation numbers and any test-dev numbers."""
    cfg = _load_yaml(run / ".hydra" / "config.yaml")
    choices = read_choices(run)
    path = run / "metrics.json"
    evaluation = read_metrics_json(path) if path.is_file() else None
    checkpoint = (evaluation or {}).get("checkpoint") or _select(cfg, "checkpoint", run)
    loss = read_loss(run, cfg, choices, checkpoint)
    if loss is None:
        if _select(cfg, "loss", run) is None:  # an unknown loss was already reported
            log.warning(
                "%s: cannot tell which loss trained this model (no loss in its config, nor in the "
                "config of its checkpoint's run directory): skipped",
                run,
            )
        return []
    setting = read_setting(run, cfg, choices)
    own_data = _select(cfg, "data", run) or {}
    results: list[Result] = []
    val: Result | None = None

    def result(split: str, family: str, values: Any, source: str, rank: int) -> Result:
        return Result(run, setting, loss, split, family, values, source, rank, order)

    values: dict[str, str | None] | None
    if evaluation is not None:
        data = evaluation.get("config") if isinstance(evaluation.get("config"), dict) else own_data
        split = "test-dev" if is_test_dev(data) else "val"
        if evaluation.get("scored", True) is False:
            # posematch-eval cannot score test-dev; the server's stats are pasted in by hand.
            log.warning('%s: "scored": false: not used (%s)', path, split)
            if split == "test-dev":
                family = "mpii" if setting.dataset == "mpii" else "coco"
                results.append(result(split, family, None, "metrics.json, not scored", 0))
        else:
            family, values = printed_values(evaluation, str(path))
            results.append(result(split, family, values, f"metrics.json{_boxes(data)}", 2))
            val = results[-1] if split == "val" else None
    # A posematch-eval folder (its config has no loss) has no training validation to fall back on.
    if val is None and _select(cfg, "loss", run) is not None:
        found, values, source, rank = training_validation(run, _boxes(own_data))
        family = found or ("mpii" if setting.dataset == "mpii" else "coco")
        results.append(result("val", family, values, source, rank))
    return results
