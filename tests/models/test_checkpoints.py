"""Checkpoint conversion: official HRNet / SimpleBaseline key layouts, training checkpoints, mmpose,
safetensors round trips, ImageNet backbone files and weights_only safety."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from posematch.models.backbones.hrnet import HRNet
from posematch.models.backbones.resnet import ResNet
from posematch.models.checkpoints import (
    export_safetensors,
    load_checkpoint,
    load_state_dict,
    read_checkpoint,
    save_safetensors,
)
from posematch.models.heads.conv1x1 import Conv1x1Head
from posematch.models.heads.deconv import DeconvHead
from posematch.models.pose_model import TopDownModel
from tests.conftest import model_config

# Official key names and shapes, written from pose_hrnet.py / pose_resnet.py and the w32 yaml
# (NUM_CHANNELS 32/64/128/256, 1/4/3 modules, 4 blocks), not derived from our modules.
OFFICIAL_HRNET_W32 = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_mean": (64,),
    "conv2.weight": (64, 64, 3, 3),
    "bn2.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.conv3.weight": (256, 64, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.running_var": (256,),
    "layer1.3.bn3.weight": (256,),
    "transition1.0.0.weight": (32, 256, 3, 3),
    "transition1.0.1.weight": (32,),
    "transition1.1.0.0.weight": (64, 256, 3, 3),
    "transition1.1.0.1.bias": (64,),
    "stage2.0.branches.0.0.conv1.weight": (32, 32, 3, 3),
    "stage2.0.branches.1.3.conv2.weight": (64, 64, 3, 3),
    "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1),
    "stage2.0.fuse_layers.0.1.1.weight": (32,),
    "stage2.0.fuse_layers.1.0.0.0.weight": (64, 32, 3, 3),
    "stage2.0.fuse_layers.1.0.0.1.weight": (64,),
    "transition2.2.0.0.weight": (128, 64, 3, 3),
    "stage3.3.fuse_layers.2.0.0.0.weight": (32, 32, 3, 3),
    "stage3.3.fuse_layers.2.0.1.0.weight": (128, 32, 3, 3),
    "stage3.3.fuse_layers.2.0.1.1.running_mean": (128,),
    "transition3.3.0.0.weight": (256, 128, 3, 3),
    "stage4.1.fuse_layers.3.0.2.0.weight": (256, 32, 3, 3),
    "stage4.2.branches.3.3.bn2.weight": (256,),
    "stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
    "final_layer.weight": (17, 32, 1, 1),
    "final_layer.bias": (17,),
}
# Official names that must NOT exist: identity transitions, fusions of the single-output last module.
NOT_IN_OFFICIAL_HRNET = (
    "transition2.0.0.weight",
    "transition2.1.0.weight",
    "stage4.2.fuse_layers.1.0.0.0.weight",
)
OFFICIAL_POSE_RESNET_50 = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer3.5.bn3.weight": (1024,),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "deconv_layers.0.weight": (2048, 256, 4, 4),
    "deconv_layers.1.running_var": (256,),
    "deconv_layers.3.weight": (256, 256, 4, 4),
    "deconv_layers.6.weight": (256, 256, 4, 4),
    "deconv_layers.7.weight": (256,),
    "final_layer.weight": (17, 256, 1, 1),
    "final_layer.bias": (17,),
}
NOT_IN_OFFICIAL_POSE_RESNET = ("fc.weight", "deconv_layers.0.bias")


def hrnet_w32() -> TopDownModel:
    return TopDownModel(HRNet(width=32), Conv1x1Head(32, 17))


def hrnet_tiny(seed: int = 0) -> TopDownModel:
    torch.manual_seed(seed)
    return TopDownModel(
        HRNet(width=8, stage1_blocks=1, num_modules=(1, 1, 1), num_blocks=1), Conv1x1Head(8, 17)
    )


def pose_resnet(depth: int = 50) -> TopDownModel:
    return TopDownModel(ResNet(depth), DeconvHead(2048 if depth >= 50 else 512, 17))


def randomised(model: TopDownModel, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with random values (distinct from the model's), named as the official files."""
    g = torch.Generator().manual_seed(seed)
    official = {}
    for key, value in model.state_dict().items():
        name = key.split(".", 1)[1]  # drop backbone./head.: the official files have no prefix
        if value.is_floating_point():
            official[name] = torch.randn(value.shape, generator=g)
        else:
            official[name] = torch.randint(0, 1000, value.shape, generator=g)
    return official


def assert_loaded(model: TopDownModel, official: dict[str, torch.Tensor]) -> None:
    own = {k.split(".", 1)[1]: v for k, v in model.state_dict().items()}
    assert own.keys() == official.keys()
    for k, v in official.items():
        assert torch.equal(own[k], v), k


@pytest.mark.parametrize(
    ("build", "known", "absent"),
    [
        (hrnet_w32, OFFICIAL_HRNET_W32, NOT_IN_OFFICIAL_HRNET),
        (pose_resnet, OFFICIAL_POSE_RESNET_50, NOT_IN_OFFICIAL_POSE_RESNET),
    ],
    ids=["hrnet_w32", "pose_resnet_50"],
)
def test_official_bare_state_dict_loads_strictly(tmp_path, build, known, absent):
    model = build()
    official = randomised(model, seed=1)
    for name, shape in known.items():
        assert name in official and tuple(official[name].shape) == shape, name
    assert not set(absent) & official.keys()
    path = tmp_path / "pose_official.pth"
    torch.save(official, path)
    report = load_checkpoint(model, path)
    assert report.exact
    assert_loaded(model, official)


def test_official_training_checkpoint_with_module_prefix(tmp_path):
    model = hrnet_tiny()
    official = randomised(model, seed=2)
    best = randomised(model, seed=3)
    path = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "epoch": 140,
            "model": "pose_hrnet",
            "state_dict": {"module." + k: v for k, v in official.items()},
            "best_state_dict": best,
            "perf": 0.744,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        },
        path,
    )
    load_checkpoint(model, path)
    assert_loaded(model, official)
    load_checkpoint(model, path, key="best_state_dict")
    assert_loaded(model, best)


@pytest.mark.parametrize("head_prefix", ["keypoint_head.", "head."], ids=["mmpose0", "mmpose1"])
def test_mmpose_checkpoint_with_numpy_metadata(tmp_path, head_prefix):
    model = hrnet_tiny()
    official = randomised(model, seed=4)
    state = {
        ("backbone." if not k.startswith("final_layer") else head_prefix) + k: v
        for k, v in official.items()
    }
    meta = {"dataset_meta": {"sigmas": np.array([0.026, 0.025]), "flip_indices": [0, 2, 1]}}
    path = tmp_path / "mmpose.pth"
    torch.save({"meta": meta, "state_dict": state}, path)
    load_checkpoint(model, path)
    assert_loaded(model, official)


def test_checkpoint_without_bn_counters_loads_and_reports_nothing_missing(tmp_path):
    model = hrnet_tiny()
    official = {k: v for k, v in randomised(model, 5).items() if "num_batches_tracked" not in k}
    path = tmp_path / "old_pytorch.pth"
    torch.save(official, path)
    assert load_checkpoint(model, path).exact


def test_wrong_checkpoint_is_refused_with_the_path_and_the_keys(tmp_path):
    official = randomised(hrnet_tiny(), seed=6)
    official["extra_layer.weight"] = torch.zeros(3)
    del official["final_layer.bias"]
    official["final_layer.weight"] = torch.zeros(16, 8, 1, 1)  # MPII head into a COCO model
    path = tmp_path / "other.pth"
    torch.save(official, path)
    model = hrnet_tiny()
    with pytest.raises(KeyError) as err:
        load_checkpoint(model, path)
    message = str(err.value)
    for needle in (
        str(path),
        "head.final_layer.bias",
        "backbone.extra_layer.weight",
        "(16, 8, 1, 1)",
    ):
        assert needle in message
    before = model.state_dict()["head.final_layer.weight"].clone()
    report = load_checkpoint(model, path, strict=False)
    assert report.missing == ("head.final_layer.bias",)
    assert report.unexpected == ("backbone.extra_layer.weight",)
    assert [m[0] for m in report.mismatched] == ["head.final_layer.weight"]
    assert torch.equal(model.state_dict()["head.final_layer.weight"], before)
    assert torch.equal(model.backbone.conv1.weight, official["conv1.weight"])


def test_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match=re.escape("nowhere/pose.pth")):
        load_checkpoint(hrnet_tiny(), "nowhere/pose.pth")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_save_load_round_trip_is_exact(tmp_path, suffix):
    model = hrnet_tiny(seed=7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # move away from the initialisation
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_safetensors(model, path)
    else:
        torch.save(model.state_dict(), path)
    other = hrnet_tiny(seed=8)
    assert load_checkpoint(other, path).exact
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model.eval()(x), other.eval()(x))


def test_export_official_file_to_safetensors(tmp_path):
    model = hrnet_tiny()
    official = randomised(model, seed=9)
    torch.save(official, tmp_path / "pose_hrnet.pth")
    out = export_safetensors(tmp_path / "pose_hrnet.pth", tmp_path / "pose_hrnet.safetensors")
    assert all(k.startswith(("backbone.", "head.")) for k in read_checkpoint(out))
    assert load_checkpoint(model, out).exact
    assert_loaded(model, official)


class _Payload:
    """Pickles as a call to _touch: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


def test_weights_only_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        read_checkpoint(path)
    assert not marker.exists()


def test_imagenet_resnet_file_initialises_the_backbone_only(tmp_path):
    torchvision_net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision_net.state_dict(), path)  # torchvision layout, with its fc classifier
    model = TopDownModel(ResNet(18), DeconvHead(512, 17), pretrained=str(path))
    for k, v in torchvision_net.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.head.final_layer.bias, torch.zeros(17))  # head keeps its init


def test_imagenet_hrnet_file_skips_the_classification_layers(tmp_path):
    source = hrnet_tiny(seed=10).backbone
    imagenet = dict(source.state_dict())
    # Layers of the official classification HRNet that the pose network does not have.
    imagenet["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 8, 1, 1)
    imagenet["final_layer.0.weight"] = torch.zeros(2048, 1024, 1, 1)
    imagenet["classifier.weight"] = torch.zeros(1000, 2048)
    imagenet["stage4.0.fuse_layers.1.0.0.0.weight"] = torch.zeros(16, 8, 3, 3)
    path = tmp_path / "hrnet_imagenet.pth"
    torch.save(imagenet, path)
    model = hrnet_tiny(seed=11)
    model_with = TopDownModel(model.backbone, model.head, pretrained=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(model_with.backbone.state_dict()[k], v), k


def test_training_checkpoint_gives_its_backbone_and_not_its_head(tmp_path):
    # The study's pretrained protocol: a posematch last.pth ({"model": backbone.* + head.*, ...}).
    trained = hrnet_tiny(seed=20)
    path = tmp_path / "last.pth"
    torch.save({"model": trained.state_dict(), "epoch": 3, "best": 0.5}, path)
    fresh = hrnet_tiny(seed=21)
    head_before = {k: v.clone() for k, v in fresh.head.state_dict().items()}
    model = TopDownModel(fresh.backbone, fresh.head, pretrained=str(path))
    for k, v in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    for k, v in head_before.items():
        assert torch.equal(model.head.state_dict()[k], v), k


def test_pretrained_file_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("missing/resnet50.pth")):
        TopDownModel(ResNet(18), DeconvHead(512, 17), pretrained="missing/resnet50.pth")
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(KeyError, match=re.escape(str(wrong))):
        TopDownModel(
            HRNet(width=8, num_modules=(1, 1, 1), num_blocks=1),
            Conv1x1Head(8, 17),
            pretrained=str(wrong),
        )


def test_load_state_dict_accepts_in_memory_official_names():
    model = hrnet_tiny()
    official = randomised(model, seed=12)
    assert load_state_dict(model, official).exact
    assert_loaded(model, official)


# mmpose HRFormer-S names (the layout of the released HRFormer pose checkpoints), written from
# mmpose's hrformer.py: WindowMSA under attn.attn, CrossFFN fc1/dw3x3/fc2, depth-wise fusions.
MMPOSE_HRFORMER_S = {
    "backbone.layer1.1.conv3.weight": (256, 64, 1, 1),
    "backbone.stage2.0.branches.0.0.norm1.weight": (32,),
    "backbone.stage2.0.branches.0.0.attn.attn.relative_position_bias_table": (169, 1),
    "backbone.stage2.0.branches.0.0.attn.attn.relative_position_index": (49, 49),
    "backbone.stage2.0.branches.0.0.attn.attn.qkv.weight": (96, 32),
    "backbone.stage2.0.branches.0.0.attn.attn.proj.bias": (32,),
    "backbone.stage2.0.branches.1.1.ffn.fc1.weight": (256, 64, 1, 1),
    "backbone.stage2.0.branches.1.1.ffn.dw3x3.weight": (256, 1, 3, 3),
    "backbone.stage2.0.branches.1.1.ffn.norm3.running_var": (64,),
    "backbone.stage3.0.fuse_layers.2.0.0.0.weight": (32, 1, 3, 3),
    "backbone.stage3.0.fuse_layers.2.0.0.2.weight": (32, 32, 1, 1),
    "backbone.stage3.0.fuse_layers.2.0.1.2.weight": (128, 32, 1, 1),
    "backbone.stage4.1.branches.3.1.attn.attn.relative_position_bias_table": (169, 8),
    "backbone.stage4.1.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
    "keypoint_head.final_layer.weight": (17, 32, 1, 1),
}


def test_mmpose_hrformer_checkpoint_loads_and_skips_unused_fusions(tmp_path):
    from hydra.utils import instantiate  # tests may use Hydra; posematch itself may not

    conf = Path(__file__).resolve().parents[2] / "conf" / "model" / "hrformer_small.yaml"
    model = instantiate(model_config(conf))
    mmpose = {
        ("keypoint_head." + k[5:] if k.startswith("head.") else k): v.clone()
        for k, v in model.state_dict().items()
    }
    for name, shape in MMPOSE_HRFORMER_S.items():
        assert tuple(mmpose[name].shape) == shape, name
    # A checkpoint trained with all four last-stage outputs carries their (unused) fusions.
    mmpose["backbone.stage4.1.fuse_layers.1.0.0.0.weight"] = torch.zeros(32, 1, 3, 3)
    g = torch.Generator().manual_seed(13)
    mmpose = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in mmpose.items()
    }
    path = tmp_path / "hrformer_small_coco_256x192.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": mmpose}, path)
    assert load_checkpoint(model, path).exact
    assert torch.equal(model.head.final_layer.weight, mmpose["keypoint_head.final_layer.weight"])


# Official HRFormer names (HRNet/HRFormer, pose/mmpose/models/backbones/hrt.py and modules/:
# MHA_ on torch's MultiheadAttention layout under attn.attn, MlpDWBN under mlp), HRFormer-S shapes.
OFFICIAL_HRFORMER_S = {
    "stage2.0.branches.0.0.attn.attn.q_proj.weight": (32, 32),
    "stage2.0.branches.0.0.attn.attn.k_proj.bias": (32,),
    "stage2.0.branches.0.0.attn.attn.v_proj.weight": (32, 32),
    "stage2.0.branches.0.0.attn.attn.out_proj.weight": (32, 32),
    "stage2.0.branches.0.0.attn.attn.relative_position_bias_table": (169, 1),
    "stage2.0.branches.0.0.mlp.fc1.weight": (128, 32, 1, 1),
    "stage2.0.branches.1.1.mlp.dw3x3.weight": (256, 1, 3, 3),
    "stage2.0.branches.1.1.mlp.norm3.running_var": (64,),
    "stage4.1.branches.3.1.attn.attn.q_proj.bias": (256,),
    "stage4.1.branches.3.1.attn.attn.relative_position_bias_table": (169, 8),
}
NOT_IN_OFFICIAL_HRFORMER = ("attn.attn.qkv.", "attn.attn.proj.", ".ffn.")


def hrformer_small():
    from hydra.utils import instantiate  # tests may use Hydra; posematch itself may not

    conf = Path(__file__).resolve().parents[2] / "conf" / "model" / "hrformer_small.yaml"
    return instantiate(model_config(conf))


def official_hrformer_names(
    state: dict[str, torch.Tensor], seed: int | None
) -> dict[str, torch.Tensor]:
    """``state`` under the official HRFormer names: each fused qkv of ours becomes the three
    MultiheadAttention projections, proj becomes out_proj, ffn becomes mlp. With a ``seed`` every
    float tensor is replaced by random values (distinct from the model's); None keeps the values."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None

    def value(v: torch.Tensor) -> torch.Tensor:
        return torch.randn(v.shape, generator=g) if g is not None and v.is_floating_point() else v

    official = {}
    for key, v in state.items():
        if ".attn.attn.qkv." in key:
            kind = key.rsplit(".", 1)[1]
            for p, part in zip("qkv", v.chunk(3, dim=0), strict=True):
                official[key.replace(f"qkv.{kind}", f"{p}_proj.{kind}")] = value(part.clone())
            continue
        key = key.replace(".attn.attn.proj.", ".attn.attn.out_proj.").replace(".ffn.", ".mlp.")
        official[key] = value(v)
    return official


def test_official_hrformer_pose_checkpoint_loads_strictly_with_equal_tensors(tmp_path):
    model = hrformer_small()
    official = official_hrformer_names(
        {
            ("keypoint_head." + k[5:] if k.startswith("head.") else k): v
            for k, v in model.state_dict().items()
        },
        seed=14,
    )
    for name, shape in OFFICIAL_HRFORMER_S.items():
        assert tuple(official["backbone." + name].shape) == shape, name
    assert not [k for k in official if any(n in k for n in NOT_IN_OFFICIAL_HRFORMER)]
    path = tmp_path / "hrt_small_coco_256x192.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": official}, path)
    model = hrformer_small()
    assert load_checkpoint(model, path).exact
    own = model.state_dict()
    block = "backbone.stage2.0.branches.0.0."
    qkv = own[block + "attn.attn.qkv.weight"]
    for i, p in enumerate("qkv"):  # rows q, then k, then v
        assert torch.equal(
            qkv[32 * i : 32 * (i + 1)], official[f"{block}attn.attn.{p}_proj.weight"]
        )
    assert torch.equal(
        own[block + "attn.attn.proj.bias"], official[block + "attn.attn.out_proj.bias"]
    )
    assert torch.equal(own[block + "ffn.dw3x3.weight"], official[block + "mlp.dw3x3.weight"])
    assert torch.equal(model.head.final_layer.weight, official["keypoint_head.final_layer.weight"])

    # The fused block computes what torch's MultiheadAttention computes with the file's separate
    # projections (the official module's arithmetic), relative-position bias as the float mask.
    attn = model.backbone.stage2[0].branches[0][0].attn.attn
    x = torch.randn(3, 49, 32, dtype=torch.float64)
    bias = attn.relative_position_bias_table[attn.relative_position_index.flatten()]
    bias = bias.reshape(49, 49, 1).permute(2, 0, 1).double()
    w = {k: official[f"{block}attn.attn.{k}"].double() for k in (
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "q_proj.bias", "k_proj.bias",
        "v_proj.bias", "out_proj.weight", "out_proj.bias")}  # fmt: skip
    expected, _ = F.multi_head_attention_forward(
        *(x.transpose(0, 1),) * 3, embed_dim_to_check=32, num_heads=1, in_proj_weight=None,
        in_proj_bias=torch.cat([w["q_proj.bias"], w["k_proj.bias"], w["v_proj.bias"]]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=w["out_proj.weight"], out_proj_bias=w["out_proj.bias"], training=False,
        need_weights=False, attn_mask=bias.expand(3, 49, 49), use_separate_proj_weight=True,
        q_proj_weight=w["q_proj.weight"], k_proj_weight=w["k_proj.weight"],
        v_proj_weight=w["v_proj.weight"],
    )  # fmt: skip
    with torch.no_grad():
        got = attn.double()(x)
    torch.testing.assert_close(got, expected.transpose(0, 1), rtol=0, atol=1e-10)


def test_official_hrformer_imagenet_file_starts_the_backbone(tmp_path):
    # hrt_small.pth as the HRFormer classification code saves it: {"model": ...}, official names,
    # with the classification head (incre_modules, downsamp_modules, final_layer, classifier).
    source = hrformer_small().backbone.state_dict()
    official = official_hrformer_names(source, seed=15)
    official["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 32, 1, 1)
    official["downsamp_modules.0.0.weight"] = torch.zeros(256, 128, 3, 3)
    official["final_layer.0.weight"] = torch.zeros(2048, 1024, 1, 1)
    official["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hrt_small.pth"
    torch.save({"model": official, "epoch": 300}, path)
    model = hrformer_small()
    model.backbone = hrformer_small().backbone
    loaded = TopDownModel(model.backbone, model.head, pretrained=str(path))
    own = loaded.backbone.state_dict()
    for key, value in official.items():
        if (
            ".attn.attn." in key
            and "_proj." in key
            and not key.split(".attn.attn.")[1].startswith("out")
        ):
            p, kind = key.rsplit(".", 2)[-2:]
            fused = own[key.replace(f"{p}.{kind}", f"qkv.{kind}")]
            c = fused.shape[0] // 3
            assert torch.equal(fused["qkv".index(p[0]) * c : ("qkv".index(p[0]) + 1) * c], value), (
                key
            )
        elif key.split(".")[0] in (
            "incre_modules",
            "downsamp_modules",
            "final_layer",
            "classifier",
        ):
            assert key not in own
        else:
            key_ours = key.replace(".attn.attn.out_proj.", ".attn.attn.proj.").replace(
                ".mlp.", ".ffn."
            )
            assert torch.equal(own[key_ours], value), key


def test_official_hrformer_block_without_its_k_projection_is_named():
    model = hrformer_small()
    official = official_hrformer_names(model.state_dict(), seed=16)
    del official["backbone.stage3.1.branches.2.0.attn.attn.k_proj.weight"]
    with pytest.raises(KeyError, match=re.escape("stage3.1.branches.2.0.attn.attn.k_proj.weight")):
        load_state_dict(model, official)
