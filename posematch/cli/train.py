"""``posematch-train``: build everything from the Hydra config and call ``engine.trainer.fit``.

    posematch-train experiment=coco/hrnet_w32_384x288_sinkhorn trainer.epochs=10
    torchrun --nproc_per_node 4 -m posematch.cli.train experiment=...     (one node, 4 GPUs)
    posematch-train -m experiment=... loss.max_iters=500,1000,1500         (Hydra multirun sweep)

Configuration mistakes stop the run before any training with a message naming the option.
SIGTERM / SIGINT finish the current step, write a mid-epoch ``last.pth`` and exit with 128 + the
signal (143 / 130); ``resume=auto`` continues from that step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posematch import runinfo
from posematch.build import build_run, build_validation
from posematch.cli.common import CONFIG_PATH, TestTimeOptions, flag, resolve_device
from posematch.cli.help import with_help
from posematch.cli.run_lock import RunFolderBusy, run_folder_lock
from posematch.cli.run_record import check_resume, run_info, write_record
from posematch.cli.user_errors import user_errors
from posematch.data.topdown import InstanceSubset, TopDownDataset, first_instances
from posematch.engine import dist
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder
from posematch.engine.signals import Preempted
from posematch.engine.trainer import fit
from posematch.types import Evaluator

log = logging.getLogger("posematch.train")


def build(cfg: DictConfig) -> dict[str, Any]:
    """Every object of the run, validated before training starts."""
    settings = instantiate(cfg.trainer)
    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    test = TestTimeOptions.from_config(cfg.test)
    run = build_run(cfg, flip=test.flip, shift=test.shift)
    loss_fn = instantiate(cfg.loss)
    codec = run.codec
    if getattr(loss_fn, "target_kind", None) != getattr(codec, "target_kind", None):
        raise ValueError(
            f"codec={type(codec).__name__} makes {codec.target_kind!r} targets but "
            f"loss={type(loss_fn).__name__} needs {loss_fn.target_kind!r}: pick a matching codec "
            "(codec=dots for the matching loss, codec=gaussian for mse)"
        )
    train_set = instantiate(cfg.data.train)
    optim = OptimizerSettings(
        make=instantiate(cfg.optim.optimizer),
        lr=cfg.optim.optimizer.lr,
        no_decay=tuple(cfg.optim.get("no_decay") or ()),
        base_batch=cfg.optim.get("base_batch"),
        schedule=instantiate(cfg.schedule) if cfg.get("schedule") else None,
        lr_mult=dict(cfg.optim.get("lr_mult") or {}),
    )
    validation = None
    if flag(cfg, "validate", True):
        validation = build_validation(cfg, run)
        if settings.max_val_instances is not None:
            subset = smoke_validation(
                validation.dataset, validation.evaluator, settings.max_val_instances
            )
            validation = dataclasses.replace(validation, dataset=subset)
    return {
        "settings": settings,
        "model": run.model,
        "loss_fn": loss_fn,
        "train_set": train_set,
        "optim": optim,
        "validation": validation,
    }


def smoke_validation(val_set: Any, evaluator: Evaluator, n: int) -> Any:
    """``trainer.max_val_instances``: the first ``n`` val instances, completed to whole images,
    and the evaluator restricted to them; a warning says the numbers are the subset's."""
    if not isinstance(val_set, TopDownDataset):
        raise ValueError(
            f"trainer.max_val_instances={n}: needs a top-down dataset, not {type(val_set).__name__}"
        )
    indices, image_ids = first_instances(val_set, n)
    evaluator.restrict(indices, image_ids)
    log.warning(
        "trainer.max_val_instances=%d: validating on %d of %d instances (%d images): the val "
        "numbers describe that subset, not the split",
        n,
        len(indices),
        len(val_set),
        len(image_ids),
    )
    return InstanceSubset(val_set, indices)


def describe(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint needs to be used alone: the resolved model and codec configs and the
    parts of the data config that shape the input (plain values, ``weights_only``-loadable)."""
    resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # cfg: a mapping
    data = resolved["data"]
    keep = ("input_size", "heatmap_size", "num_keypoints", "spec")
    return {
        "model": resolved["model"],
        "codec": resolved["codec"],
        "data": {
            **{k: data[k] for k in keep if k in data},
            "val": {"pipeline": data["val"]["pipeline"]},
        },
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns ``fit``'s summary."""
    instantiate(cfg.trainer)  # its option checks come before anything is written (seed=abc)
    TestTimeOptions.from_config(cfg.test)
    for key, default in (("validate", True), ("resume_force", False)):
        flag(cfg, key, default)
    device = resolve_device(cfg.device, dist.init())
    run_dir = Path(dist.broadcast_object(str(cfg.run_dir)))
    with contextlib.ExitStack() as held:
        # Rank 0 holds the folder's lock; every rank stops on a refusal.
        refusal = None
        if dist.is_main():
            try:
                held.enter_context(run_folder_lock(run_dir))
            except RunFolderBusy as err:
                refusal = str(err)
        refusal = dist.broadcast_object(refusal)
        if refusal is not None:
            raise RunFolderBusy(refusal)
        return _train(cfg, run_dir, device)


def _train(cfg: DictConfig, run_dir: Path, device: torch.device) -> dict[str, Any]:
    """The run's record, its parts and ``fit``, in a run folder this process holds."""
    resume = cfg.resume not in (None, "", "none", "false")
    # Every rank checks (reading only), so a refusal stops them all; rank 0 writes the record.
    force = flag(cfg, "resume_force")
    kept = check_resume(cfg, run_dir, resume, force, write=dist.is_main())
    dist.barrier()
    if dist.is_main() and not kept:
        write_record(cfg, run_dir)
    if dist.is_main() and not runinfo.exists(run_dir):  # runs from before run.json get one too
        run_info(cfg, "train").write(run_dir)
    parts = build(cfg)
    summary = fit(
        parts["model"],
        parts["loss_fn"],
        parts["train_set"],
        parts["optim"],
        parts["settings"],
        RunFolder(run_dir, resume=cfg.resume, describe=describe(cfg)),
        device,
        validation=parts["validation"],
    )
    dist.shutdown()
    return summary


@with_help("train")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        with user_errors("posematch-train"):
            run(cfg)
    except Preempted as stop:  # SIGTERM / SIGINT: last.pth holds the step; exit 128 + signal
        log.warning("%s", stop)
        dist.shutdown()
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
