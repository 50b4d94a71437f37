"""Benchmark of the distribution-matching loss: forward + backward time and peak memory.

Compared in one run, at B=2, K=17, 64x48 heatmaps, subpixel demanders, reg=1:
  (a) baseline: a plain log-domain Sinkhorn (potentials f, g, logsumexp updates) that runs all 1000
      iterations with autograd through them, written here;
  (b) POT: ``ot.sinkhorn(method="sinkhorn_log", numItermax=1000, stopThr=1e-9)`` on the torch backend,
      one problem at a time, autograd through its iterations;
  (c) posematch: ``sinkhorn_matching_loss`` (early stop, implicit gradient).
Then posematch alone at B=32, K=17 on 64x48 and 96x72 maps.

Targets (issue 1): (c) at least 300x faster than (a), at most 1/100 of its peak memory, same value to
1e-5 relative. Peak memory on CPU is the rise of the peak resident set (VmHWM, reset just before the call)
over the resident set before it, in a fresh process per method; on CUDA, ``torch.cuda.max_memory_allocated``. The script always exits 0: it
is a report, and prints PASS/FAIL beside each target.

Usage: python scripts/bench_loss.py [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from posematch.demanders import make_demanders
from posematch.losses.sinkhorn import sinkhorn_matching_loss

ITERS = 1000


def make_inputs(b: int, k: int, h: int, w: int, device: str, seed: int = 0):
    """Heatmaps shaped like a trained network's: a bump near the dot, plus noise."""
    g = torch.Generator().manual_seed(seed)
    dots = torch.rand(b, k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centre = dots + torch.randn(b, k, 2, generator=g)
    d2 = (xs - centre[..., 0, None, None]) ** 2 + (ys - centre[..., 1, None, None]) ** 2
    heat = torch.exp(-d2 / 8.0) + 0.05 * torch.randn(b, k, h, w, generator=g)
    return heat.to(device), dots.to(device)


def problem(heat: torch.Tensor, dots: torch.Tensor):
    """Suppliers (P, N), costs (P, N, M) and demanders (P, M) of the B*K transport problems."""
    b, k, h, w = heat.shape
    a = torch.relu(heat).flatten(2)
    a = (a / a.sum(-1, keepdim=True)).reshape(b * k, h * w)
    pos, masses = make_demanders(dots, "subpixel")
    ys, xs = torch.meshgrid(
        torch.arange(h, device=heat.device), torch.arange(w, device=heat.device), indexing="ij"
    )
    centres = torch.stack([xs.flatten(), ys.flatten()], -1).to(heat.dtype)
    cost = torch.cdist(centres.expand(b * k, -1, -1), pos.reshape(b * k, -1, 2))
    return a, cost, masses.reshape(b * k, -1)


def baseline_loss(heat: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """(a): log-domain Sinkhorn, all iterations, autograd through every one. Returns (B*K,)."""
    a, cost, b = problem(heat, dots)
    loga, logb = torch.log(a), torch.log(b)  # zeros give -inf, which logsumexp handles
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(ITERS):
        g = logb - torch.logsumexp(f.unsqueeze(-1) - cost, dim=1)
        f = loga - torch.logsumexp(g.unsqueeze(1) - cost, dim=2)
    plan = torch.exp(f.unsqueeze(-1) + g.unsqueeze(1) - cost)
    return (plan * cost).sum((1, 2))


def pot_loss(heat: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """(b): POT's log-domain Sinkhorn on the torch backend, one problem at a time."""
    import ot

    a, cost, b = problem(heat, dots)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in range(a.shape[0]):
            keep = b[p] > 0
            c = cost[p][:, keep]
            plan = ot.sinkhorn(
                a[p], b[p][keep], c, 1.0, method="sinkhorn_log", numItermax=ITERS, stopThr=1e-9
            )
            values.append((plan * c).sum())
    return torch.stack(values)


def posematch_loss(heat: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """(c): the library's loss, per problem."""
    return sinkhorn_matching_loss(heat, dots).flatten()


METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "baseline": baseline_loss,
    "pot": pot_loss,
    "posematch": posematch_loss,
}


def fwd_bwd(fn, heat: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    x = heat.detach().clone().requires_grad_(True)
    values = fn(x, dots)
    values.sum().backward()
    return values.detach()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_it(fn, heat, dots, device: str, repeats: int) -> float:
    """Median seconds of forward + backward, after one warm-up call."""
    fwd_bwd(fn, heat, dots)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fwd_bwd(fn, heat, dots)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_worker(name: str, shape: tuple[int, int, int, int], device: str, queue) -> None:
    heat, dots = make_inputs(*shape, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(METHODS[name], heat, dots)
        queue.put(torch.cuda.max_memory_allocated() - before)
        return
    before = _rss_bytes("VmRSS")
    try:  # Linux: reset the high-water mark, so that start-up peaks do not hide the call's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    fwd_bwd(METHODS[name], heat, dots)
    queue.put(_rss_bytes("VmHWM") - before)


def _rss_bytes(key: str) -> int:
    """Current (VmRSS) or peak (VmHWM) resident memory, from /proc or else getrusage (peak only)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_bytes(name: str, shape: tuple[int, int, int, int], device: str) -> int:
    """Peak memory added by one forward + backward, measured in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(name, shape, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return max(int(result), 1)


def mib(n: int) -> str:
    return f"{n / 2**20:9.1f} MiB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")

    shape = (2, 17, 64, 48)
    heat, dots = make_inputs(*shape, dev)
    print(f"\n== B={shape[0]}, K={shape[1]}, {shape[2]}x{shape[3]}: forward + backward ==")
    values = {name: fwd_bwd(fn, heat, dots) for name, fn in METHODS.items()}
    _, iters = sinkhorn_matching_loss(heat, dots, return_iters=True)
    repeats = {"baseline": 2, "pot": 2, "posematch": args.repeats * 4}
    seconds = {n: time_it(fn, heat, dots, dev, repeats[n]) for n, fn in METHODS.items()}
    peaks = {n: peak_bytes(n, shape, dev) for n in METHODS}
    for name in METHODS:
        print(f"{name:>10}: {seconds[name] * 1e3:10.2f} ms   peak {mib(peaks[name])}")
    rel = {
        n: ((values["posematch"] - values[n]).abs() / values[n].abs()).max().item()
        for n in ("baseline", "pot")
    }
    print(f"posematch iterations run: {iters} (baseline and POT: up to {ITERS})")
    print(f"max rel. value difference vs baseline {rel['baseline']:.1e}, vs POT {rel['pot']:.1e}")

    print("\n== posematch alone, B=32, K=17 ==")
    for h, w in ((64, 48), (96, 72)):
        big_heat, big_dots = make_inputs(32, 17, h, w, dev)
        t = time_it(posematch_loss, big_heat, big_dots, dev, args.repeats)
        _, it = sinkhorn_matching_loss(big_heat, big_dots, return_iters=True)
        peak = peak_bytes("posematch", (32, 17, h, w), dev)
        print(f"{h}x{w}: {t * 1e3:8.1f} ms fwd+bwd, {it} iterations, peak {mib(peak)}")

    speedup = seconds["baseline"] / seconds["posematch"]
    memory = peaks["baseline"] / peaks["posematch"]
    print("\n== summary ==")
    print(f"speedup vs baseline: {speedup:.0f}x (target >= 300x) {verdict(speedup >= 300)}")
    print(f"speedup vs POT: {seconds['pot'] / seconds['posematch']:.0f}x")
    print(f"memory vs baseline: 1/{memory:.0f} (target <= 1/100) {verdict(memory >= 100)}")
    print(
        f"value rel. diff vs baseline: {rel['baseline']:.1e} (target <= 1e-5) "
        f"{verdict(rel['baseline'] <= 1e-5)}"
    )


if __name__ == "__main__":
    main()
