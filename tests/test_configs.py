"""Every loss and codec config composes, instantiates through Hydra and runs on a real batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from posematch.codecs.dots import DotCodec
from posematch.codecs.gaussian import GaussianHeatmapCodec

CONF = Path(__file__).resolve().parents[1] / "conf"
LOSSES = sorted((CONF / "loss").glob("*.yaml"))
CODECS = sorted((CONF / "codec").glob("*.yaml"))


def _group_config(path: Path):
    """The group option as Hydra composes it in posematch-train's config (its own defaults list
    included; a codec takes its sizes from the data config there)."""
    group = path.parent.name
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", [f"{group}={path.stem}"])[group]


def test_every_loss_and_codec_config_names_a_posematch_class_that_exists():
    from hydra.utils import get_class

    assert {p.stem for p in LOSSES} >= {"sinkhorn", "mse"} and {p.stem for p in CODECS} >= {
        "dots",
        "gaussian",
    }
    for path in [*LOSSES, *CODECS]:
        target = _group_config(path)._target_
        assert target.startswith("posematch."), path
        assert isinstance(get_class(target), type), path  # raises when the class is gone


@pytest.mark.parametrize("path", CODECS, ids=lambda p: p.stem)
def test_codec_configs_instantiate_and_round_trip(path):
    codec = instantiate(_group_config(path))
    w, h = codec.geometry.input_size
    kpts = torch.tensor([[[w * 0.3, h * 0.6], [w * 0.5, h * 0.25]]])
    target = codec.encode(kpts, torch.ones(1, 2))
    assert target.weights.tolist() == [[1.0, 1.0]]
    heatmaps = (
        target.heatmaps
        if isinstance(codec, GaussianHeatmapCodec)
        else GaussianHeatmapCodec(codec.geometry.input_size, codec.geometry.heatmap_size, 2.0, True)
        .encode(kpts, torch.ones(1, 2))
        .heatmaps
    )
    decoded = codec.geometry.to_input(codec.decode(heatmaps).keypoints)
    half_pixel = 0.5 / min(codec.geometry.scale)  # half a heatmap pixel, in input pixels
    torch.testing.assert_close(decoded, kpts, rtol=0, atol=half_pixel)


@pytest.mark.parametrize("path", LOSSES, ids=lambda p: p.stem)
def test_loss_configs_instantiate_and_give_a_finite_differentiable_scalar(path):
    cfg = _group_config(path)  # as Hydra composes it: a loss option may extend another
    loss = instantiate(cfg)
    kpts = torch.tensor([[[40.0, 100.0], [150.0, 30.0]], [[0.0, 0.0], [191.0, 255.0]]])
    vis = torch.tensor([[2, 2], [1, 0]])
    heat = torch.rand(2, 2, 64, 48, requires_grad=True)
    if loss.target_kind == "dots":  # the matching loss, the expected distance
        target = DotCodec().encode(kpts, vis)
        value = loss(heat, target.keypoints, target.weights)
    else:
        target = GaussianHeatmapCodec().encode(kpts, vis)
        value = loss(heat, target.heatmaps, target.weights)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(heat.grad).all() and heat.grad.abs().sum() > 0
