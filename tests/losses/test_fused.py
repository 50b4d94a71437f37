"""The fused CPU solve's switch and fallback: without a build the loss still runs (on torch ops)
and says so; bad input to the op is refused by name. Its values are tested with the torch ops'
against POT and float64 references (test_sinkhorn.py, both solvers)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from posematch.losses import fused
from posematch.losses.sinkhorn import sinkhorn_matching_loss
from tests.losses.test_sinkhorn import pot_value


@pytest.fixture
def fresh_state():
    before = dict(fused._state)
    fused._state.clear()
    yield
    fused._state.clear()
    fused._state.update(before)


def test_a_failed_build_warns_once_and_the_loss_still_matches_pot(monkeypatch, fresh_state):
    def broken() -> None:
        raise RuntimeError("Error building extension\nc++: fatal error: no compiler here")

    monkeypatch.setattr(fused, "_build", broken)
    heat = torch.rand(1, 1, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dot = torch.tensor([[[2.3, 5.6]]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"fused_solve\.cpp.*no compiler here.*torch ops"):
        value = sinkhorn_matching_loss(heat, dot)
    assert fused.fused_solver() is None  # remembered: no second build, no second warning
    expected = pot_value(heat[0, 0].numpy(), dot[0, 0].numpy(), "subpixel", 1.0)
    assert float(value) == pytest.approx(expected, rel=1e-7)


def test_environment_switch_turns_it_off(monkeypatch, fresh_state):
    monkeypatch.setenv("POSEMATCH_FUSED", "0")
    monkeypatch.setattr(fused, "_build", lambda: pytest.fail("built although switched off"))
    assert fused.fused_solver() is None


def test_the_op_refuses_mismatched_input():
    op = fused.fused_solver()
    assert op is not None, "the fused CPU solve did not build (make install builds it)"
    a = torch.full((2, 6), 1 / 6)
    cost, kernel = torch.ones(2, 4, 6), torch.ones(2, 4, 6)
    b = torch.full((2, 4), 0.25)
    with pytest.raises(RuntimeError, match="disagree in shape"):
        op(a, cost, kernel, torch.ones(2, 5), b, 10, 1e-5, True)
    with pytest.raises(RuntimeError, match="one dtype"):
        op(a, cost, kernel.double(), torch.ones(2, 6), b, 10, 1e-5, True)
    with pytest.raises(RuntimeError, match="max_iters"):
        op(a, cost, kernel, torch.ones(2, 6), b, 0, 1e-5, True)


@pytest.mark.parametrize(("age_s", "removed"), [(3600.0, True), (5.0, False)])
def test_a_stale_build_lock_is_removed_a_fresh_one_kept(tmp_path, monkeypatch, age_s, removed):
    # A build killed half way leaves cpp_extension's lock, on which every later build would wait.
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = fused.build_directory()
    assert folder.parent == tmp_path
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    stamp = time.time() - age_s
    os.utime(lock, (stamp, stamp))
    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs, lock_there=lock.exists())
        raise RuntimeError("not building in this test")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.raises(RuntimeError, match="not building"):
        fused._build()
    assert seen["build_directory"] == str(folder)
    assert seen["lock_there"] is not removed
