"""The training log (issue 16): a header that says what is trained on what, progress lines with
the lr, the step time and the ETA of the epoch and of the run, and step-level TensorBoard scalars
apart from the epoch records."""

from __future__ import annotations

import json
import logging
import re

import torch

from posematch.engine.logging import _duration
from posematch.engine.optim import OptimizerSettings
from posematch.engine.settings import RunFolder, TrainerSettings, default_workers
from posematch.engine.trainer import fit
from posematch.losses.sinkhorn import SinkhornMatchingLoss
from tests.engine.tiny import synthetic_set, tiny_model


def test_the_log_has_a_header_and_informative_progress_lines(tmp_path, caplog):
    data = synthetic_set(tmp_path / "synthetic")  # 24 training images
    settings = TrainerSettings(epochs=2, batch_size=4, num_workers=0, log_every=1)
    with caplog.at_level(logging.INFO, logger="posematch.train"):
        fit(tiny_model(), SinkhornMatchingLoss(), data, OptimizerSettings(torch.optim.SGD, lr=0.05),
            settings, RunFolder(tmp_path / "run"), torch.device("cpu"))  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    params = sum(p.numel() for p in tiny_model().parameters())
    header = (
        f"training on cpu x1: 24 train samples, no validation; {params:,} parameters; "
        "batch 4 x 1 process(es) = 4; lr 0.05; 2 epochs of 6 steps; 0 loader workers"
    )
    assert header in lines
    # With a warm-up the header gives the configured lr, not the warm-up's first (issue 16).
    caplog.clear()
    warm = TrainerSettings(epochs=1, batch_size=4, num_workers=0, warmup_iters=3, warmup_ratio=0.01)
    with caplog.at_level(logging.INFO, logger="posematch.train"):
        fit(tiny_model(), SinkhornMatchingLoss(), data, OptimizerSettings(torch.optim.SGD, lr=0.05),
            warm, RunFolder(tmp_path / "warm"), torch.device("cpu"))  # fmt: skip
    assert any(
        "; lr 0.05 (warm-up x0.01 -> x1 over 3 steps); 1 epochs of 6 steps" in r.getMessage()
        for r in caplog.records
    )
    progress = [x for x in lines if x.startswith("epoch 1 ") and "/6 loss" in x]
    assert len(progress) == 6  # log_every=1
    took = r"(\d+s|\d+m\d\ds|\d+h\d\dm)"  # _duration's forms: a loaded machine reaches minutes
    assert re.fullmatch(
        rf"epoch 1 1/6 loss [\d.]+ lr 0\.05 [\d.]+s/step eta {took} \(run {took}\)", progress[0]
    )

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "train/train_loss"} <= tags
    assert not any(t.startswith("train/") and t.endswith("_step") for t in tags)


def test_durations_and_default_workers():
    assert [_duration(s) for s in (4.4, 65, 7325)] == ["4s", "1m05s", "2h02m"]
    assert 1 <= default_workers() <= 4
    assert default_workers(most=1) == 1


def _reject(token: str) -> None:
    raise ValueError(f"non-standard JSON token {token}")


def test_metrics_jsonl_is_strict_json_with_null_for_a_metric_without_value(tmp_path):
    """A DeepLabCut project's RMSE_pcutoff is NaN when no part passes the cutoff; Python's json
    would write the bare token NaN, which jq and JavaScript reject. The record holds null instead,
    and the table cell reads it as missing."""
    from posematch.engine.logging import RunLogger
    from posematch.evaluation.report import MISSING, dlc_row

    logger = RunLogger(tmp_path / "run")
    nested = {"per_part": [1.5, float("inf")]}
    logger.epoch({"epoch": 1, "val/RMSE": 3.31, "val/RMSE_pcutoff": float("nan"), **nested})
    logger.close()
    line = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0]
    record = json.loads(line, parse_constant=_reject)  # raised on the old NaN token
    assert record == {"epoch": 1, "val/RMSE": 3.31, "val/RMSE_pcutoff": None,
                      "per_part": [1.5, None]}  # fmt: skip
    metrics = {k.removeprefix("val/"): v for k, v in record.items() if k.startswith("val/")}
    assert dlc_row(metrics)[1][:2] == ["3.3", MISSING]
