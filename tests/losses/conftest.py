"""The matching loss's two solvers on a CPU: the fused per-problem op and the batched torch ops
(the fallback without a compiler, and the CUDA path). Modules that mark themselves with
``pytest.mark.usefixtures("backend")`` run every test on both."""

from __future__ import annotations

import pytest

from posematch.losses import fused


@pytest.fixture(params=["fused", "torch"])
def backend(request):
    before = dict(fused._state)
    fused.use_fused(request.param == "fused")
    if request.param == "fused":
        # Not a skip: make install builds it, so a missing build is a failure here.
        assert fused.fused_solver() is not None, "the fused CPU solve did not build"
    yield request.param
    fused._state.clear()
    fused._state.update(before)
