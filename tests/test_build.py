"""posematch.build.build_run, the one build step of every command (issue 14): the checks it makes
once, the test time it hands on, and a checkpoint that replaces the config's weight sources."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from posematch.build import TestTime, build_run
from posematch.keypoints import COCO
from tests.cli.test_infer_cli import SMALL, _compose


def _cfg(*overrides: str):
    return _compose("train", *SMALL, "run_dir=/x", *overrides)


def test_a_fresh_model_with_the_spec_test_time():
    run = build_run(_cfg(), flip=True, shift=False)
    assert run.load is None and run.model.training  # a fresh model, as instantiated
    # COCO's flip pairs, written out: nose stays, (left, right) eyes, ears, ... swap.
    expected = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
    assert run.test_time == TestTime(expected, False)
    assert run.spec.names == COCO.names
    assert build_run(_cfg(), flip=False).test_time.flip_perm is None


def test_the_joint_count_is_checked_from_the_spec():
    # The model head is sized by data.num_keypoints; a spec of another size is refused at build
    # time, not later inside flip_back or the evaluator.
    with pytest.raises(ValueError, match="num_keypoints"):
        build_run(_cfg("data.num_keypoints=16"))


def test_a_checkpoint_replaces_the_configs_weight_sources(tmp_path):
    cfg = _cfg()
    torch.manual_seed(3)
    model = instantiate(cfg.model)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    # A config naming weight files that are not on this machine still builds from a checkpoint.
    cfg.model.pretrained = str(tmp_path / "not_here.pth")
    run = build_run(cfg, path)
    assert run.load is not None and not run.model.training
    for name, value in model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value), name
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*nope\.pth: file not found"):
        build_run(cfg, tmp_path / "nope.pth")


def test_the_seed_before_the_call_fixes_the_initial_weights():
    torch.manual_seed(0)
    a = build_run(_cfg()).model.state_dict()
    torch.manual_seed(0)
    b = build_run(_cfg()).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
