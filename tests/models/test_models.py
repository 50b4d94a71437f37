"""Every conf/model/*.yaml: output shapes, parameter counts and GFLOPs against the published ones,
and the official weight initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from posematch.models import stats
from posematch.models.backbones.hrformer import HRFormer
from posematch.models.backbones.hrnet import HRNet
from posematch.models.backbones.resnet import ResNet
from posematch.models.heads.conv1x1 import Conv1x1Head
from posematch.models.heads.deconv import DeconvHead
from posematch.models.pose_model import TopDownModel
from tests.conftest import model_config

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted((REPO / "conf" / "model").glob("*.yaml"))
SIZES = [(256, 192), (384, 288)]  # (height, width)
CPU_FORWARD_MAX_GFLOPS = 2.0  # shapes on the meta device for all; also a CPU forward below this


def build_on_meta(path: Path) -> nn.Module:
    with torch.device("meta"):
        return instantiate(model_config(path))


# Independent truths: HRNet README (SimpleBaseline, HRNet; GFLOPs by the official counter) and the
# HRFormer paper. (params in M, GFLOPs at 256x192, GFLOPs at 384x288); None: not published.
PUBLISHED = {
    "simplebaseline_r50": (34.0, 8.9, 20.0),
    "simplebaseline_r101": (53.0, 12.4, None),
    "simplebaseline_r152": (68.6, 15.7, 35.3),
    "hrnet_w32": (28.5, 7.1, 16.0),
    "hrnet_w48": (63.6, 14.6, 32.9),
    "hrformer_small": (7.8, None, None),
    "hrformer_base": (43.2, None, None),
}
# Configs with no published pose numbers: the test-sized networks of the demo and the CLI tests,
# SimpleBaseline-R18 (no row in the HRNet README) and the EfficientNet-Lite0 pose models (posematch's
# own ImageNet start; their counts are checked in tests/models/test_efficientnet.py).
SMALL_MODELS = {
    "hrnet_small",
    "hrnet_tiny",
    "simplebaseline_r18",
    "efficientnet_lite0",
    "efficientnet_lite0_s16",
}


def test_every_published_model_has_a_config_and_every_config_an_entry():
    # A paper model without a config, or a new config without its published numbers (or a
    # stated reason in SMALL_MODELS), fails here.
    names = {p.stem for p in MODELS}
    assert set(PUBLISHED) <= names
    assert names - set(PUBLISHED) <= SMALL_MODELS


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_config_instantiates_and_gives_heatmaps_at_stride_4(path):
    cfg = model_config(path)
    with torch.device("meta"):
        meta_model = instantiate(cfg)
    assert isinstance(meta_model, TopDownModel)
    k = cfg.head.num_keypoints
    assert k == 17
    for h, w in SIZES:
        with torch.no_grad():
            out = meta_model.eval()(torch.randn(2, 3, h, w, device="meta"))
        assert out.shape == (2, k, h // 4, w // 4), path.stem
    if stats.gflops(meta_model, *SIZES[0]) < CPU_FORWARD_MAX_GFLOPS:
        # Real numbers for the small models, at the smaller size (CPU time budget of the suite).
        with torch.no_grad():
            out = instantiate(cfg).eval()(torch.randn(1, 3, *SIZES[0]))
        assert out.shape == (1, k, SIZES[0][0] // 4, SIZES[0][1] // 4)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_model_config_trains_forward_and_backward_reaching_every_parameter(path):
    # On the meta device (shapes only): a training-mode step of the big models costs no memory.
    with torch.device("meta"):
        model = instantiate(model_config(path)).train()
        h, w = SIZES[0]
        model(torch.randn(2, 3, h, w)).square().sum().backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unreached, f"{path.stem}: no gradient reaches {unreached[:5]}"


@pytest.mark.parametrize("name", sorted(PUBLISHED), ids=str)
def test_parameter_count_within_1_percent_of_published(name):
    path = REPO / "conf" / "model" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path.name} not written yet")
    params = stats.count_params(build_on_meta(path)) / 1e6
    assert params == pytest.approx(PUBLISHED[name][0], rel=0.01)


@pytest.mark.parametrize("name", sorted(k for k, v in PUBLISHED.items() if v[1]), ids=str)
def test_gflops_within_3_percent_of_published(name):
    model = build_on_meta(REPO / "conf" / "model" / f"{name}.yaml")
    for (h, w), published in zip(SIZES, PUBLISHED[name][1:], strict=True):
        if published is not None:
            assert stats.gflops(model, h, w) == pytest.approx(published, rel=0.03), (h, w)


def test_flop_counter_on_a_hand_counted_network():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8*3*9 weights x (4*3) output pixels = 2592
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),  # 8*4*16 x (8*6) = 24576 (official)
        nn.Flatten(),
        nn.Linear(4 * 8 * 6, 10),  # 192 * 10 = 1920
    )
    assert stats.count_macs(net, 8, 6) == 2592 + 24576 + 1920
    # True MACs of the transposed conv use its input pixels (4*3): 8*4*16*12 = 6144.
    assert stats.count_macs(net, 8, 6, true_macs=True) == 2592 + 6144 + 1920


def test_hrnet_last_stage_keeps_only_the_highest_resolution_and_every_parameter_learns():
    model = TopDownModel(
        HRNet(width=8, stage1_blocks=1, num_modules=(1, 1, 2), num_blocks=1), Conv1x1Head(8, 5)
    )
    last = model.backbone.stage4[-1]
    assert len(last.fuse_layers) == 1 and len(model.backbone.stage4[0].fuse_layers) == 4
    model(torch.randn(2, 3, 64, 64)).square().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []  # DDP would fail on unused parameters (ARCHITECTURE.md, known traps)


def test_official_initialisation():
    torch.manual_seed(0)
    head = DeconvHead(in_channels=512, num_keypoints=17)
    for i in (0, 3, 6):
        weight = head.deconv_layers[i].weight
        assert (
            weight.std().item() == pytest.approx(0.001, rel=0.05)
            and head.deconv_layers[i].bias is None
        )
        assert torch.equal(head.deconv_layers[i + 1].weight, torch.ones(256))
        assert torch.equal(head.deconv_layers[i + 1].bias, torch.zeros(256))
    assert head.final_layer.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert torch.equal(head.final_layer.bias, torch.zeros(17))
    hrnet = HRNet(width=18, stage1_blocks=2, num_modules=(1, 3, 2), num_blocks=2)
    convs = torch.cat([m.weight.flatten() for m in hrnet.modules() if isinstance(m, nn.Conv2d)])
    assert convs.std().item() == pytest.approx(0.001, rel=0.02)
    bns = [m for m in hrnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)


def test_hrformer_windows_pad_odd_sizes_and_every_parameter_learns():
    torch.manual_seed(0)
    backbone = HRFormer(width=8, num_heads=(1, 1, 2, 2), num_modules=(1, 1, 1), num_blocks=1)
    model = TopDownModel(backbone, Conv1x1Head(8, 3))
    out = model(torch.randn(2, 3, 96, 64))  # 24x16 features: not a multiple of the 7x7 windows
    assert out.shape == (2, 3, 24, 16) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_simplebaseline_resnet18_forward_on_cpu():
    torch.manual_seed(0)
    model = TopDownModel(ResNet(18), DeconvHead(512, 4)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 96))
    assert out.shape == (1, 4, 32, 24) and torch.isfinite(out).all()


def test_softplus_head_is_log1p_exp_of_the_same_conv_and_loads_the_same_keys():
    torch.manual_seed(0)
    plain, positive = Conv1x1Head(8, 5), Conv1x1Head(8, 5, activation="softplus")
    positive.load_state_dict(plain.state_dict())  # no extra parameter: same keys, strict
    features = torch.randn(2, 8, 6, 4, dtype=torch.float64) * 3000  # conv outputs of +-several
    plain, positive = plain.double(), positive.double()
    z = plain(features)
    expected = torch.log1p(torch.exp(-z.abs())) + z.clamp_min(0)  # stable log(1 + e^z)
    out = positive(features)
    assert (out > 0).all()
    # nn.Softplus returns z itself above z = 20, where they differ by log1p(e^-20) ~ 2e-9.
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        Conv1x1Head(8, 5, activation="sigmoid")


def test_output_scale_multiplies_the_logits_before_the_activation():
    torch.manual_seed(0)
    plain = Conv1x1Head(8, 5).double()
    scaled = Conv1x1Head(8, 5, activation="softplus", output_scale=10.0).double()
    scaled.load_state_dict(plain.state_dict())  # no extra parameter
    features = torch.randn(2, 8, 6, 4, dtype=torch.float64) * 300
    z = 10.0 * plain(features)
    expected = torch.log1p(torch.exp(-z.abs())) + z.clamp_min(0)
    torch.testing.assert_close(scaled(features), expected, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="output_scale"):
        Conv1x1Head(8, 5, output_scale=0.0)
