"""Evaluation of a model over a dataset split, in one process or across DDP ranks.

Each rank predicts its ``ShardSampler`` shard (every instance exactly once, whatever the world size);
rank 0 gathers the predictions, restores dataset order and hands them to the evaluator
(``process`` / ``evaluate``, e.g. ``CocoKeypointEvaluator``, ``MpiiPCKhEvaluator``).
With ``heatmap_health=True`` (validation during training) the metrics also hold the health of the
non-flipped heatmaps (``posematch.evaluation.diagnosis.heatmap_health``): ``dead_share``,
``top_mass``, ``window_mass``; only two floats per heatmap are kept, never the heatmaps.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from posematch.engine import dist
from posematch.engine.loaders import batches
from posematch.engine.settings import Validation
from posematch.engine.signals import ignore_stop_signals
from posematch.evaluation.diagnosis import heatmap_health as health_summary
from posematch.inference import predict_loader
from posematch.types import Batch, Codec, EvaluationSet, Predictions

HEALTH_KEYS = ("dead_share", "top_mass", "window_mass")


def collect_predictions(
    model: nn.Module,
    dataset: EvaluationSet,
    codec: Codec,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_perm: Sequence[int] | None = None,
    shift: bool = True,
) -> Predictions | None:
    """All ``Predictions`` of ``dataset`` in dataset order on rank 0 (``None`` on other ranks)."""
    loader = DataLoader(
        cast(Dataset, dataset),
        batch_size=batch_size,
        sampler=dist.ShardSampler(len(cast(Sized, dataset))),  # a map-style dataset
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,  # a preempted run finishes its validation
        collate_fn=Batch.collate,
    )
    with batches(loader) as items:
        parts = list(predict_loader(model, items, codec, device, flip_perm, shift))
    gathered = dist.gather_to_main(parts)
    if gathered is None:
        return None
    merged = Predictions.concatenate(gathered)
    merged = merged.take(np.argsort(merged.index, kind="stable"))
    if not np.array_equal(merged.index, np.arange(len(cast(Sized, dataset)))):
        raise RuntimeError("evaluation shards do not cover the dataset exactly once")
    return merged


def evaluate(
    model: nn.Module,
    validation: Validation,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    heatmap_health: bool = False,
) -> dict[str, Any] | None:
    """Metrics of ``model`` on ``validation.dataset``, decoded by its codec, scored by its evaluator,
    with its test time (flip permutation, shift); on rank 0, ``None`` on the other ranks.

    ``heatmap_health``: add ``dead_share``, ``top_mass`` and ``window_mass`` of the non-flipped
    heatmaps (see the module docstring; None where every heatmap is dead).
    The metrics also hold ``skipped``: the dataset's records skipped under ``skip_bad`` (malformed
    at load time or unreadable), whose people count as missed.
    """
    dataset, evaluator = validation.dataset, validation.evaluator
    merged = collect_predictions(
        model, dataset, validation.codec, device, batch_size, num_workers,
        validation.flip_perm, validation.shift,
    )  # fmt: skip
    if merged is None:
        return None
    evaluator.reset()
    evaluator.process(merged)
    metrics: dict[str, Any] = evaluator.evaluate()
    # Counted from the gathered rows, so images skipped on every rank are in the count.
    unreadable = int((~merged.valid.astype(bool)).sum())
    malformed = len(dataset.bad_records)
    metrics = {**metrics, "skipped": malformed + unreadable}
    if heatmap_health:
        health = health_summary(merged.top_mass, merged.window_mass)
        metrics = {**metrics, **{k: health[k] for k in HEALTH_KEYS}}
    return metrics
