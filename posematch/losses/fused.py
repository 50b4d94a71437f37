"""The matching loss's fused CPU solve (``fused_solve.cpp``), built on first use with torch's
``cpp_extension`` and cached per machine and torch version (``build_directory()``: under
``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); ``make install`` builds it,
10-25 s once.

``fused_solver()`` returns ``torch.ops.posematch.matching_solve`` or None when it cannot be used:
switched off (``POSEMATCH_FUSED=0`` in the environment, or ``use_fused(False)``), or not built
(no C++ compiler: a warning says so once, and the loss runs on torch ops, slower, to the same
values within float rounding). The op takes a (P, N) suppliers, the (P, M, N) cost and stabilised
kernel (both overwritten), the (P, N) row factors, b (P, M), max_iters, tol and need_grad, and
returns <C, P> (P,), dL/da (P, N) (empty without need_grad) and the scalings each problem ran
(P,): what ``transport._solve`` computes after its kernel, for the batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_solve.cpp")
# -fopenmp: at::parallel_for is OpenMP in torch's CPU builds (the process's libgomp, torch's own
# thread count) and the pixel sums are `omp simd` reductions; -fno-math-errno lets sqrt vectorise.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]

# A build killed half way leaves cpp_extension's lock file, and every later build would wait on
# it for ever: one older than this (seconds) is taken as stale. A build takes 10-25 s here.
STALE_LOCK_S = 600.0

_lock = threading.Lock()
_state: dict[str, object] = {}


def use_fused(enabled: bool) -> None:
    """Switch the fused solve on or off for this process (tests run the loss both ways)."""
    _state["enabled"] = enabled


def _build() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    # Imported here: it is slow, and it logs a warning on import on a machine without CUDA.
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        quiet.setLevel(level)
    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    load(
        name="posematch_fused_solve",
        sources=[str(SOURCE)],
        build_directory=str(folder),
        extra_cflags=FLAGS,
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.posematch.matching_solve


def build_directory() -> Path:
    """Where the op is built: one folder per Python, torch version and torch installation (the op
    links to that torch; two virtual environments would otherwise rebuild it in turn)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    where = hashlib.sha1(str(Path(torch.__file__).resolve().parent).encode()).hexdigest()[:8]
    return Path(root) / f"posematch_fused_solve-{py}-torch{torch.__version__}-{where}"


def _tail(err: Exception, lines: int = 4) -> str:
    """The last lines of a build error (the compiler's message ends it)."""
    return " / ".join(str(err).strip().splitlines()[-lines:])


def fused_solver() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    """The fused CPU solve, or None (module docstring)."""
    enabled = _state.get("enabled", os.environ.get("POSEMATCH_FUSED", "1") != "0")
    if not enabled:
        return None
    with _lock:
        if "op" not in _state:
            try:
                _state["op"] = _build()
            except Exception as err:  # no compiler, or a failed build: torch ops still work
                warnings.warn(
                    f"posematch: the matching loss's fused CPU solve ({SOURCE.name}) could not be "
                    f"built ({type(err).__name__}: {_tail(err)}); the loss runs on torch ops instead "
                    "(slower on a CPU, the same values within float rounding)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _state["op"] = None
    return _state["op"]  # type: ignore[return-value]


if __name__ == "__main__":  # make install: build it now rather than in the first training step
    print("fused CPU solve:", "built" if fused_solver() is not None else "NOT built (see warning)")
