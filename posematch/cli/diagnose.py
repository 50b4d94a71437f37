"""``posematch-diagnose``: why a trained run scores what it scores.

    posematch-diagnose run=runs/demo/sinkhorn [checkpoint=last.pth] [split=val|test] [out=DIR]
                       [score=max|mass]

Rebuilds the run from its saved ``.hydra/config.yaml`` and ``best.pth`` (else ``last.pth``), runs
its validation dataset (``split=test``: the same dataset with ``val2017`` -> ``test2017`` in its
annotation and image paths) through ``posematch.engine.diagnose`` with the run's own
codec and flip test, and writes ``diagnosis.json`` and ``diagnosis.md`` (plus the scored results
``diagnosis_results.json``) into the run folder or ``out``. Relative data roots are read from the
current folder; ``data_root=`` replaces the run's ``data.root``; ``score=`` replaces the window
decoder's keypoint score (the same keypoints, another ranking).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from posematch.build import build_run, build_validation
from posematch.cli.common import CONFIG_PATH, flag, resolve_device
from posematch.cli.help import with_help
from posematch.cli.user_errors import user_errors
from posematch.engine.diagnose import diagnose
from posematch.evaluation.diagnosis import markdown
from posematch.predictor import run_test_time, saved_config

SPLITS = ("val", "test")


def checkpoint_path(run_dir: Path, checkpoint: str | None) -> Path:
    """``checkpoint`` as given, or inside the run folder (``last.pth``); by default ``best.pth``,
    else ``last.pth``."""
    if checkpoint is None:
        for name in ("best.pth", "last.pth"):
            if (run_dir / name).is_file():
                return run_dir / name
        raise FileNotFoundError(f"run={run_dir}: no best.pth or last.pth")
    path = Path(checkpoint)
    if not path.is_file() and (run_dir / checkpoint).is_file():
        return run_dir / checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint}: file not found")
    return path


def select_split(cfg: DictConfig, split: str) -> None:
    """Point ``cfg.data.val`` at ``split``: ``val`` leaves it; ``test`` replaces ``val2017`` by
    ``test2017`` in its resolved ``ann_file`` and ``image_dir`` (however the run's config built
    them), and in ``data.eval_split`` when the config has one. The evaluator's ``ann_file`` follows
    ``data.val.ann_file``; detection boxes keep ``data.det_file``."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if split == "val":
        return
    paths = {key: str(cfg.data.val[key]) for key in ("ann_file", "image_dir")}
    for key, path in paths.items():
        if "val2017" not in path:
            raise ValueError(
                f"split=test: data.val.{key}={path} has no 'val2017' to replace by 'test2017'"
            )
    if "eval_split" in cfg.data:
        cfg.data.eval_split = str(cfg.data.eval_split).replace("val2017", "test2017")
    for key, path in paths.items():
        cfg.data.val[key] = path.replace("val2017", "test2017")


def run(cfg: DictConfig) -> dict:
    """Diagnose as configured; the report (also written to ``diagnosis.json``)."""
    run_dir = Path(cfg.run)
    train_cfg = saved_config(run_dir, trust=flag(cfg, "trust_config"))
    checkpoint = checkpoint_path(run_dir, cfg.checkpoint)
    out_dir = Path(cfg.out) if cfg.out is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # Interpolations into Hydra's runtime (run_dir, output_dir) only resolve inside the original run.
    train_cfg.run_dir = str(run_dir)
    train_cfg.output_dir = str(out_dir)
    if cfg.data_root is not None:
        train_cfg.data.root = str(cfg.data_root)
    select_split(train_cfg, cfg.split)
    if cfg.get("score") is not None:
        if "score" not in train_cfg.codec:
            raise ValueError(f"score={cfg.score}: the run's codec has no 'score' option")
        train_cfg.codec.score = str(cfg.score)  # keypoint score for rescoring (max | mass)
    for key in ("ann_file", "image_dir"):
        if not Path(train_cfg.data.val[key]).exists():
            raise FileNotFoundError(
                f"data.val.{key}={train_cfg.data.val[key]}: not found (data.root="
                f"{train_cfg.data.root!r}; relative roots are read from {Path.cwd()}: run from the "
                "repository root or pass data_root=)"
            )
    local = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = resolve_device(cfg.device, local)
    flip, shift = run_test_time(train_cfg)
    run = build_run(train_cfg, checkpoint, flip=flip, shift=shift)
    scored = build_validation(train_cfg, run, results_name="diagnosis_results.json")
    report = diagnose(
        run.model.to(device), scored, run.spec, device, cfg.batch_size, cfg.num_workers
    )
    report = {
        "run": str(run_dir),
        "checkpoint": str(checkpoint),
        "split": cfg.split,
        "ann_file": str(train_cfg.data.val.ann_file),
        **report,
    }
    report["setup"] = {"checkpoint": str(checkpoint), "split": cfg.split, **report["setup"]}
    text = markdown(report)
    (out_dir / "diagnosis.json").write_text(json.dumps(report, indent=2))
    (out_dir / "diagnosis.md").write_text(text)
    print(text)
    print(f"written: {out_dir / 'diagnosis.json'}, {out_dir / 'diagnosis.md'}")
    return report


@with_help("diagnose")
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="diagnose")
def main(cfg: DictConfig) -> None:
    with user_errors("posematch-diagnose"):
        run(cfg)


if __name__ == "__main__":
    main()
