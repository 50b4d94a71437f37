"""The one build step from a composed config to the parts every command uses.

``build_run(cfg)`` gives the model (fresh, or with a checkpoint's weights), the codec, the keypoint
spec and the test-time options, checked against each other once: the model's output and input
agree with the codec's geometry and with the spec's joint count. ``posematch-train``, ``-eval``,
``-diagnose``, ``-export``, ``-infer`` and ``Predictor`` all build through it, so none of them
holds a second copy of that glue.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from posematch.engine.checks import check_geometry
from posematch.engine.settings import Validation
from posematch.keypoints import KeypointSpec
from posematch.models.checkpoints import LoadReport, load_checkpoint
from posematch.types import Codec, Geometry


@dataclass(frozen=True)
class TestTime:
    """What evaluation and inference do at test time: the flip test's joint permutation (None: no
    flip test) and the official 1 px shift of the flipped heatmaps."""

    __test__ = False  # not a pytest class, despite the name

    flip_perm: tuple[int, ...] | None = None
    shift: bool = True


@dataclass(frozen=True)
class PoseRun:
    """A model with the parts that read its output. ``load``: what loading the checkpoint did
    (None for a fresh model)."""

    model: nn.Module
    codec: Codec
    spec: KeypointSpec
    test_time: TestTime
    load: LoadReport | None = None

    @property
    def geometry(self) -> Geometry:
        """Input and heatmap sizes (pixels) and their mapping: the codec's, which the model was
        checked against and the data pipeline must agree with."""
        return self.codec.geometry


def checkpoint_holds_every_weight(model_cfg: DictConfig) -> None:
    """Drop a model config's weight sources (``pretrained``: the ImageNet start; ``init_from``: the
    fine-tune start) in place: a trained checkpoint replaces them, and their files need not exist
    where the checkpoint is used."""
    for key in ("pretrained", "init_from"):
        if model_cfg.get(key) is not None:
            model_cfg[key] = None


def build_run(
    cfg: DictConfig,
    checkpoint: str | Path | None = None,
    flip: bool = True,
    shift: bool = True,
) -> PoseRun:
    """The model of ``cfg.model`` (with the weights of ``checkpoint``, ``weights_only`` and strict,
    in eval mode; its config's own weight sources skipped), ``cfg.codec``, ``cfg.data.spec`` and
    the test time (``flip``: the flip test with the spec's permutation; ``shift``), checked
    together. The model is built first, so a seed set before the call fixes its initial weights."""
    model_cfg = cfg.model
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint={checkpoint}: file not found")
        model_cfg = copy.deepcopy(model_cfg)
        checkpoint_holds_every_weight(model_cfg)
    model = instantiate(model_cfg)
    report = None
    if checkpoint is not None:
        report = load_checkpoint(model, checkpoint)
        model.eval()
    codec = instantiate(cfg.codec)
    spec = instantiate(cfg.data.spec)
    geometry = codec.geometry
    check_geometry(model, geometry.input_size, geometry.heatmap_size, spec.num_keypoints)
    flip_perm = tuple(spec.flip_permutation()) if flip else None
    return PoseRun(model, codec, spec, TestTime(flip_perm, shift), report)


def build_validation(cfg: DictConfig, run: PoseRun, **evaluator_options: Any) -> Validation:
    """The split of ``cfg.data.val`` scored by ``cfg.data.evaluator`` (``evaluator_options``
    override its config), decoded with ``run``'s codec at ``run``'s test time."""
    return Validation(
        dataset=instantiate(cfg.data.val),
        codec=run.codec,
        evaluator=instantiate(cfg.data.evaluator, **evaluator_options),
        flip_perm=run.test_time.flip_perm,
        shift=run.test_time.shift,
    )
