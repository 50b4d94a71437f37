"""A posematch-train checkpoint carries what it is (model, codec, data config as plain values):
moved out of its run folder it still loads with ``weights_only``, builds its Predictor and runs
posematch-infer alone, with the numbers of the run folder (issue 9)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import posematch
from posematch.cli.infer import run as infer
from tests.cli.test_infer_cli import IMAGE, _compose
from tests.cli.test_resume_guard_cli import _train
from tests.engine.tiny import synthetic_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("described")
    data, run = root / "synthetic", root / "run"
    synthetic_set(data)
    proc = _train(run, data)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_checkpoint_alone_gives_the_run_folders_predictions(tmp_path, trained):
    state = torch.load(trained / "last.pth", weights_only=True)  # plain values: no code
    assert state["config"]["model"]["_target_"] == "posematch.models.pose_model.TopDownModel"
    assert state["config"]["data"]["input_size"] == [64, 64]
    alone = tmp_path / "elsewhere.pth"
    shutil.copy(trained / "last.pth", alone)
    a = posematch.Predictor.from_checkpoint(alone).predict(str(IMAGE))
    b = posematch.Predictor.from_run(trained, checkpoint="last.pth").predict(str(IMAGE))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)

    cfg = _compose(
        "infer",
        f"checkpoint={alone}",
        f"input={IMAGE}",
        f"output_dir={tmp_path / 'o'}",
        "detector=none",
    )  # fmt: skip  (the default model=hrnet_w32 would not load it)
    infer(cfg)
    written = json.loads((tmp_path / "o" / "keypoints.json").read_text())
    np.testing.assert_allclose(
        np.array(written[0]["keypoints"]).reshape(-1, 3)[:, :2], a.keypoints[0], rtol=0, atol=1e-9
    )


def test_a_file_without_config_asks_for_the_model(tmp_path, trained):
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(trained / "last.pth", weights_only=True)["model"], bare)
    with pytest.raises(ValueError, match=r"carries no config .* pass model="):
        posematch.Predictor.from_checkpoint(bare)


def test_posematch_eval_takes_the_checkpoint_alone(tmp_path, trained):
    from hydra import compose, initialize_config_dir

    from posematch.cli.evaluate import run as evaluate
    from tests.conftest import REPO

    data = trained.parent / "synthetic"
    alone = tmp_path / "alone.pth"
    shutil.copy(trained / "last.pth", alone)
    common = ["data=synthetic", f"data.root={data}", "test.num_workers=0", "test.batch_size=4"]

    def scored(*overrides: str) -> dict:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=[*common, *overrides])
        return evaluate(cfg)

    # The fault: posematch-eval built the default model (hrnet_w32 here) and failed to load.
    by_itself = scored(f"checkpoint={alone}", f"output_dir={tmp_path / 'a'}")
    told = scored(
        f"checkpoint={alone}", f"output_dir={tmp_path / 'b'}", "experiment=demo/synthetic_sinkhorn",
        "data.input_size=[64,64]", "data.heatmap_size=[16,16]", "data.root=" + str(data),
    )  # fmt: skip
    assert by_itself["scored"] and by_itself == {**told}


def test_posematch_eval_refuses_data_with_another_joint_count(tmp_path, trained):
    from hydra import compose, initialize_config_dir

    from posematch.cli.evaluate import run as evaluate
    from tests.conftest import REPO, SHARED_DATA

    overrides = [
        "data=dlc_openfield", f"data.root={SHARED_DATA / 'dlc_openfield'}", "test.num_workers=0",
        f"checkpoint={trained / 'last.pth'}", f"output_dir={tmp_path / 'o'}",
    ]  # fmt: skip
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    # The fault: an IndexError inside the flip test after the model ran on every crop.
    with pytest.raises(
        ValueError, match=r"trained on 17 joints \(synthetic\), but data=dlc_openfield has 4"
    ):
        evaluate(cfg)
