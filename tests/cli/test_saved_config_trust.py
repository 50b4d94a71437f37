"""A config file beside a checkpoint is data, not code (issues 11 and 15): posematch-infer and
posematch-diagnose refuse a run folder whose saved config names anything but posematch classes,
its config entry points, torch's optimizers and schedulers and albumentations' transforms, before
anything is instantiated."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from posematch.predictor import saved_config
from tests.conftest import REPO, SHARED_DATA

MARKER_CODE = "open({path!r}, 'w').write('code ran')"


def _run_folder(tmp_path, target: str, marker) -> object:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = {
        "model": {"_target_": target, "_args_": [MARKER_CODE.format(path=str(marker))]},
        "codec": {"_target_": "posematch.codecs.dots.DotCodec"},
    }
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    torch.save({}, run / "best.pth")
    return run


@pytest.mark.parametrize(
    "target",
    [
        "builtins.exec",
        "${oc.env:EVIL}",
        "os.system",
        # Issue 15: functions inside trusted packages load or compile code.
        "torch.load",
        "torch.hub.load",
        "torch.utils.cpp_extension.load_inline",
        "torchvision.io.read_file",
        "timm.create_model",
        "posematch.models.checkpoints.read_checkpoint",  # a posematch function, not a class
        "torch.optim.lr_scheduler.LambdaLR.__init__",
    ],
)
def test_untrusted_target_is_refused_and_nothing_runs(tmp_path, target):
    marker = tmp_path / "pwned"
    run = _run_folder(tmp_path, target, marker)
    with pytest.raises(ValueError, match=r"refusing to instantiate model\._target_"):
        saved_config(run)
    trusted = OmegaConf.to_container(saved_config(run, trust=True), resolve=False)
    assert trusted["model"]["_target_"] == target  # the explicit escape hatch
    assert not marker.exists()


def test_infer_entry_point_refuses_the_run_folder(tmp_path):
    marker = tmp_path / "pwned"
    run = _run_folder(tmp_path, "builtins.exec", marker)
    exe = shutil.which("posematch-infer") or str(REPO / ".venv" / "bin" / "posematch-infer")
    image = SHARED_DATA / "coco_sample" / "000000000785.jpg"
    cmd = [exe, f"checkpoint={run / 'best.pth'}", f"input={image}", "detector=none",
           f"hydra.run.dir={tmp_path / 'out'}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "refusing to instantiate model._target_: 'builtins.exec'" in proc.stderr
    assert "trust_config=true" in proc.stderr
    assert not marker.exists()


def test_the_real_configs_are_trusted():
    import glob
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from posematch.predictor import untrusted_targets

    every = sorted(str(Path(p).relative_to(REPO / "conf" / "experiment").with_suffix(""))
                   for p in glob.glob(str(REPO / "conf" / "experiment" / "*" / "*.yaml")))  # fmt: skip
    for experiment in every:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={experiment}", "run_dir=/x"])
        assert untrusted_targets(OmegaConf.to_container(cfg, resolve=False)) == []
