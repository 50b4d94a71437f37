"""``posematch-eval``: score a checkpoint with the official COCO / MPII protocol.

    posematch-eval experiment=coco/hrnet_w32_384x288_sinkhorn checkpoint=runs/x/best.pth data.boxes=gt

Builds data, model and codec from the composed config (model, codec and input sizes from the
checkpoint's run folder or from the config a posematch checkpoint carries, when there is one), loads
the checkpoint (``weights_only``),
predicts with the flip test (one process or under torchrun), prints the paper-style row and writes
``metrics.json`` beside the results file in the run directory.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from posematch import runinfo
from posematch.build import build_run, build_validation
from posematch.cli.common import (
    CONFIG_PATH,
    TestTimeOptions,
    flag,
    resolve_device,
    settle_output_dir,
)
from posematch.cli.help import with_help
from posematch.cli.run_record import model_name, run_info
from posematch.cli.user_errors import user_errors
from posematch.engine import dist
from posematch.engine.evaluate import evaluate
from posematch.evaluation.report import markdown_row, strict_json
from posematch.predictor import trained_config

log = logging.getLogger("posematch.eval")


def adopt_trained_config(cfg: DictConfig) -> DictConfig | None:
    """Take the model, codec and input sizes from what the checkpoint says it is: its run folder's
    saved config, else the config a posematch checkpoint carries; the data to score (split, boxes,
    paths) stays the command's. Nothing changes for other files (official weights). Returns the
    config adopted from (None when the checkpoint says nothing)."""
    source, where = trained_config(cfg.checkpoint, trust=flag(cfg, "trust_config"))
    if source is None:
        return None
    log.info("model, codec and input sizes from %s", where)
    trained_k, data_k = source.data.get("num_keypoints"), cfg.data.get("num_keypoints")
    if trained_k is not None and data_k is not None and int(trained_k) != int(data_k):
        raise ValueError(
            f"checkpoint={cfg.checkpoint}: trained on {trained_k} joints "
            f"({source.data.get('name', 'its dataset')}), but data={cfg.data.get('name')} has "
            f"{data_k}: score it on the dataset it was trained on"
        )
    with open_dict(cfg):
        cfg.model = copy.deepcopy(source.model)
        cfg.codec = copy.deepcopy(source.codec)
        for key in ("input_size", "heatmap_size", "num_keypoints"):
            if key in source.data:
                cfg.data[key] = source.data[key]
    return source


def trained_facts(cfg: DictConfig, adopted: DictConfig | None) -> tuple[Any, str | None]:
    """What trained the checkpoint: its loss config and its model config's name, from its run
    folder's ``run.json``, else the config ``adopt_trained_config`` took (the name then from the
    model's backbone class), else the composed config when an experiment was named; parts that
    none of these says stay None (official weights: ``run.json`` says so)."""
    folder = Path(cfg.checkpoint).parent
    if runinfo.exists(folder):
        info = runinfo.RunInfo.read(folder)
        loss = info.loss
        loss_cfg = None if loss is None else OmegaConf.create(
            {"_target_": loss["target"], **{k: v for k, v in loss.items()
                                            if k not in ("kind", "target")}})  # fmt: skip
        return loss_cfg, info.model
    name = None if adopted is None else model_name(OmegaConf.create({"model": cfg.model}), False)
    if adopted is not None and adopted.get("loss") is not None:
        return adopted.loss, name
    from hydra.core.hydra_config import HydraConfig

    named = HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("experiment")
    return (cfg.get("loss") if named else None), name


def run(cfg: DictConfig) -> dict | None:
    """Evaluate as configured; the metrics on rank 0, ``None`` elsewhere."""
    settle_output_dir(cfg)
    test = TestTimeOptions.from_config(cfg.test)
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint}: file not found")
    device = resolve_device(cfg.device, dist.init())
    out_dir = Path(cfg.output_dir)
    adopted = adopt_trained_config(cfg)
    run = build_run(cfg, cfg.checkpoint, flip=test.flip, shift=test.shift)
    assert run.load is not None  # built from a checkpoint
    log.info("loaded %s: %s", cfg.checkpoint, run.load.describe())
    scored = build_validation(cfg, run)
    metrics = evaluate(run.model.to(device), scored, device, test.batch_size, test.num_workers)
    if metrics is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {"checkpoint": str(cfg.checkpoint), "config": OmegaConf.to_container(cfg.data)}
        (out_dir / "metrics.json").write_text(strict_json({**metrics, **record}, indent=2))
        loss_cfg, name = trained_facts(cfg, adopted)
        folder = Path(cfg.checkpoint).parent
        budget = runinfo.RunInfo.read(folder).budget if runinfo.exists(folder) else None
        info = run_info(
            cfg,
            "eval",
            loss_cfg=loss_cfg,
            checkpoint=str(cfg.checkpoint),
            model=name,
            budget=budget,
        )
        info.write(out_dir)
        if metrics.get("scored", True):
            print(markdown_row(metrics))
        else:
            print(f"no ground truth for this split: predictions written to {out_dir}")
    dist.shutdown()
    return metrics


@with_help("evaluate")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors("posematch-eval"):
        run(cfg)


if __name__ == "__main__":
    main()
