"""Benchmark of the distribution-matching loss: forward + backward wall time and peak memory.

1. At B=2, K=17, 64x48 heatmaps (float32, subpixel demanders, reg=1), three ways:
   (a) baseline, written here: log-domain Sinkhorn (potentials f, g, logsumexp updates) over all B*K
       problems at once, running all 1000 iterations with autograd through every one;
   (b) POT: ``ot.sinkhorn(method="sinkhorn_log", numItermax=1000, stopThr=1e-9)`` on the torch
       backend, one problem at a time, autograd through its iterations;
   (c) posematch: ``sinkhorn_matching_loss(reduction="sum")`` (early stop, implicit gradient);
   (d) posematch at equal iterations: the same with ``tol=0``, so it runs all 1000 scalings as the
       baseline does. (a)/(d) is the speed-up of the method at equal work, (d)/(c) the gain of
       stopping each joint at its tolerance; (a)/(c), their product, is what a user sees.
   Each runs in a fresh process: a tiny warm-up, one call whose peak memory is taken (on CPU, the
   rise of the resident-set high-water mark, reset just before the call, over the resident set
   before it; on CUDA, ``max_memory_allocated`` over the memory allocated before it), then repeats:
   the time is the median over all calls but the warm-up (2 of the baseline, 1 of POT: ~10 s and
   ~30 s a call on 2 idle CPU cores).
2. posematch alone at B=32, K=17 on 64x48 and 96x72 maps.

Targets (issue 1): posematch at least 300x faster than the baseline, at most 1/100 of its peak
memory, per-problem values equal to 1e-5 relative. The script is a report: it prints PASS/FAIL
beside each target and always exits 0. Timings on a shared machine vary with its load, printed.
Also printed: the heatmap gradients of posematch vs the baseline, and whether POT's are finite
(its log(a) gives NaN gradients when a heatmap has pixels <= 0, i.e. suppliers of mass 0).

Usage: python scripts/bench_loss.py [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from posematch.demanders import make_demanders
from posematch.losses.sinkhorn import sinkhorn_matching_loss

ITERS = 1000
REG = 1.0
Shape = tuple[int, int, int, int]
# Each method returns the loss to back-propagate and its per-problem values (B*K,) when it has them.
Method = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def make_inputs(shape: Shape, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps like a trained network's (a Gaussian bump near the dot, plus noise) and dots."""
    b, k, h, w = shape
    torch.manual_seed(seed)
    dots = torch.rand(b, k, 2) * torch.tensor([w - 1.0, h - 1.0])
    centre = dots + torch.randn(b, k, 2)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d2 = (xs - centre[..., 0, None, None]) ** 2 + (ys - centre[..., 1, None, None]) ** 2
    heat = torch.exp(-d2 / 8.0) + 0.05 * torch.randn(b, k, h, w)
    return heat.to(device), dots.to(device)


def transport_problems(
    heat: torch.Tensor, dots: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Suppliers a (P, N), costs C (P, N, 4) in heatmap px and demanders b (P, 4), P = B*K."""
    bsz, k, h, w = heat.shape
    a = torch.relu(heat).flatten(2)
    a = (a / a.sum(-1, keepdim=True)).reshape(bsz * k, h * w)
    pos, masses = make_demanders(dots, "subpixel")
    pixel = torch.arange(h * w, device=heat.device)
    centres = torch.stack([pixel % w, pixel // w], -1).to(heat.dtype)  # (N, 2) as (x, y)
    diff = centres[None, :, None, :] - pos.reshape(bsz * k, 1, 4, 2)
    cost = diff.pow(2).sum(-1).sqrt()
    return a, cost, masses.reshape(bsz * k, 4)


def safe_log(x: torch.Tensor) -> torch.Tensor:
    """log(x), -inf where x == 0, with a zero (not NaN) gradient there."""
    alive = x > 0
    return torch.where(alive, torch.log(torch.where(alive, x, torch.ones_like(x))), -torch.inf)


def baseline(heat: torch.Tensor, dots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a): log-domain Sinkhorn over all problems, every iteration recorded by autograd."""
    a, cost, b = transport_problems(heat, dots)
    loga, logb, mr = safe_log(a), safe_log(b), -cost / REG
    f = torch.zeros_like(a)  # (P, N) supplier potentials, in units of reg
    g = torch.zeros_like(b)  # (P, 4) demander potentials
    for _ in range(ITERS):  # POT's order: demanders first, so the rows end exact
        g = logb - torch.logsumexp(f.unsqueeze(-1) + mr, dim=1)
        f = loga - torch.logsumexp(g.unsqueeze(1) + mr, dim=2)
    plan = torch.exp(f.unsqueeze(-1) + g.unsqueeze(1) + mr)
    values = (plan * cost).sum((1, 2))
    return values.sum(), values


def pot(heat: torch.Tensor, dots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b): POT's log-domain Sinkhorn on the torch backend, one problem at a time."""
    import ot

    a, cost, b = transport_problems(heat, dots)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge": stopThr=1e-9 is below float32
        for p in range(a.shape[0]):
            keep = b[p] > 0
            c = cost[p][:, keep]
            plan = ot.sinkhorn(
                a[p], b[p][keep], c, REG, method="sinkhorn_log", numItermax=ITERS, stopThr=1e-9
            )
            values.append((plan * c).sum())
    out = torch.stack(values)
    return out.sum(), out


def posematch(heat: torch.Tensor, dots: torch.Tensor) -> tuple[torch.Tensor, None]:
    """(c): the library's loss, summed over the batch by the library."""
    return sinkhorn_matching_loss(heat, dots, reg=REG, reduction="sum"), None


def posematch_1000(heat: torch.Tensor, dots: torch.Tensor) -> tuple[torch.Tensor, None]:
    """(d): the library's loss with ``tol=0``: exactly ``ITERS`` scalings, the baseline's count."""
    return sinkhorn_matching_loss(
        heat, dots, reg=REG, tol=0.0, max_iters=ITERS, reduction="sum"
    ), None


METHODS: dict[str, Method] = {
    "baseline": baseline,
    "pot": pot,
    "posematch": posematch,
    "posematch_tol0": posematch_1000,
}


def fwd_bwd(
    fn: Method, heat: torch.Tensor, dots: torch.Tensor, device: str
) -> tuple[float, torch.Tensor | None, torch.Tensor]:
    """One forward + backward: seconds, per-problem values, gradient w.r.t. the heatmaps."""
    x = heat.detach().clone().requires_grad_(True)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    loss, values = fn(x, dots)
    loss.backward()
    sync()
    return time.perf_counter() - start, values, x.grad


def rss_kib(key: str) -> int:
    """VmRSS (current) or VmHWM (peak) in KiB from /proc; getrusage's peak where that is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, never reset


def worker(name: str, shape: Shape, device: str, repeats: int, queue: Any) -> None:
    """In a fresh process: warm up on a tiny problem, measure peak memory, then time repeats."""
    fn = METHODS[name]
    fwd_bwd(fn, *make_inputs((1, 1, 8, 6), device), device)
    heat, dots = make_inputs(shape, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        first, values, grad = fwd_bwd(fn, heat, dots, device)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = rss_kib("VmRSS")
        try:  # Linux: reset the high-water mark so that start-up peaks do not hide the call's
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        first, values, grad = fwd_bwd(fn, heat, dots, device)
        peak = (rss_kib("VmHWM") - before) * 1024
    times = [first] + [fwd_bwd(fn, heat, dots, device)[0] for _ in range(repeats)]
    out: dict[str, Any] = {"peak": peak, "seconds": statistics.median(times), "min": min(times)}
    out["runs"] = len(times)
    if name.startswith("posematch"):
        tol = {"tol": 0.0, "max_iters": ITERS} if name == "posematch_tol0" else {}
        with torch.no_grad():
            vals, out["iters"] = sinkhorn_matching_loss(
                heat, dots, reg=REG, return_iters=True, **tol
            )
        values = vals.flatten()
    if shape[0] * shape[1] <= 64:  # small runs only: values and gradients go back for comparison
        out["values"] = values.detach().double().cpu().numpy()
        out["grad"] = grad.double().cpu().numpy()
    queue.put(out)


def measure(name: str, shape: Shape, device: str, repeats: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(name, shape, device, repeats, queue))
    proc.start()
    result = queue.get()  # before join: the payload may not fit the pipe's buffer
    proc.join()
    # Sent as numpy: torch would share tensors through file descriptors of the exited child.
    return {k: torch.from_numpy(v) if k in ("values", "grad") else v for k, v in result.items()}


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def max_rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst over problems (leading axis) of max |x - ref| / max |ref| within the problem."""
    x, ref = x.flatten(1), ref.flatten(1)
    return ((x - ref).abs().amax(-1) / ref.abs().amax(-1)).max().item()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--repeats", type=int, default=20, help="posematch runs after the measured one"
    )
    args = parser.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: running on cpu")
        dev = "cpu"
    memory_kind = "cuda max_memory_allocated" if dev == "cuda" else "peak RSS rise"
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads")
    print(f"load average at start {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")

    shape: Shape = (2, 17, 64, 48)
    print(f"\n== B={shape[0]}, K={shape[1]}, {shape[2]}x{shape[3]}, fwd+bwd ({memory_kind}) ==")
    # Runs after the measured one.
    repeats = {"baseline": 1, "pot": 0, "posematch": args.repeats, "posematch_tol0": 2}
    res = {name: measure(name, shape, dev, repeats[name]) for name in METHODS}
    for name, r in res.items():
        print(
            f"{name:>10}: {r['seconds'] * 1e3:10.2f} ms median of {r['runs']} "
            f"(min {r['min'] * 1e3:.2f}), peak {mib(r['peak'])}"
        )
    pm, base = res["posematch"], res["baseline"]
    speedup = base["seconds"] / pm["seconds"]
    pot_speedup = res["pot"]["seconds"] / pm["seconds"]
    memory = base["peak"] / max(pm["peak"], 1)
    rel_base = max_rel(pm["values"][:, None], base["values"][:, None])
    rel_pot = max_rel(pm["values"][:, None], res["pot"]["values"][:, None])
    equal = res["posematch_tol0"]
    at_equal = base["seconds"] / equal["seconds"]
    early = equal["seconds"] / pm["seconds"]
    print(f"time baseline/posematch {speedup:.0f}x, POT/posematch {pot_speedup:.0f}x")
    print(
        f"  = at equal iterations ({equal['iters']} each) {at_equal:.0f}x "
        f"x early stop ({pm['iters']} instead of {ITERS}) {early:.0f}x"
    )
    print(f"peak memory posematch/baseline 1/{memory:.0f}")
    print(f"max rel. value diff posematch vs baseline {rel_base:.1e}, vs POT {rel_pot:.1e}")
    print(f"posematch iterations run: {pm['iters']} (baseline {ITERS}, POT {ITERS})")
    grad_rel = max_rel(pm["grad"].flatten(0, 1), base["grad"].flatten(0, 1))
    pot_finite = bool(torch.isfinite(res["pot"]["grad"]).all())
    print(
        f"heatmap gradient, max|diff|/max|baseline| per joint: posematch vs baseline {grad_rel:.1e}"
    )
    print(f"POT heatmap gradient finite: {pot_finite}")

    print("\n== posematch alone, B=32, K=17 ==")
    for h, w in ((64, 48), (96, 72)):
        r = measure("posematch", (32, 17, h, w), dev, max(args.repeats // 4, 1))
        ms, its = r["seconds"] * 1e3, r["iters"]
        print(f"{h}x{w}: {ms:8.1f} ms fwd+bwd, {its} iterations, peak {mib(r['peak'])}")

    print(f"\nload average at end {os.getloadavg()[0]:.1f}: other processes inflate the timings")
    print("\n== summary ==")
    print(f"speedup vs baseline: {speedup:.0f}x (target >= 300x) {verdict(speedup >= 300)}")
    print(
        f"  of which at equal iterations: {at_equal:.0f}x, early stop: {early:.0f}x (info); "
        f"values at equal iterations vs baseline: "
        f"{max_rel(equal['values'][:, None], base['values'][:, None]):.1e}"
    )
    print(f"memory vs baseline: 1/{memory:.0f} (target <= 1/100) {verdict(memory >= 100)}")
    print(
        f"value rel. diff vs baseline: {rel_base:.1e} (target <= 1e-5) {verdict(rel_base <= 1e-5)}"
    )
    print(f"speedup vs POT: {pot_speedup:.0f}x; value rel. diff vs POT: {rel_pot:.1e} (info)")


if __name__ == "__main__":
    main()
