"""Training-step time with each loss, split into its phases, and the matching loss's share (issue 10).

For the demo's model and recipe (``experiment=demo/synthetic_*``: HRNet-tiny, 128x96 input, 32x24
heatmaps, batch 16, 2 loader workers) and for HRNet-W32 at 256x192 (64x48 heatmaps, batch 4 on a
CPU), both losses with the same model, data, optimizer and batches (the MSE baseline with its
Gaussian codec, the matching loss with its dots codec) run ``--steps`` measured training steps after
two warm-up steps, through the real pipeline, loader and optimizer. Each step is split into

    data (waiting for the loader) | forward | loss | backward | optimizer

(medians in ms; "loss" is the loss's forward, its backward is part of "backward"), and the table prints the loss's share of the step and the matching step's time
over the MSE step's. Target on CPU: the matching loss adds <= 5% to a demo step. The script is a
report: PASS/FAIL beside the target, exit 0. The machine's load is printed first.

Usage: python scripts/bench_train.py [--steps N] [--quick]   (--quick: the demo model only)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from posematch.engine.optim import OptimizerSettings
from posematch.engine.trainer import train_loader
from posematch.synthetic import generate

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ("data", "forward", "loss", "backward", "optimizer")
SETUPS = {  # name: (overrides, batch size)
    "demo (HRNet-tiny 128x96)": ([], 16),
    "HRNet-W32 256x192": (
        ["model=hrnet_w32", "data.input_size=[192,256]", "data.heatmap_size=[48,64]"],
        4,
    ),
}


def measure(overrides: list[str], batch: int, steps: int) -> dict[str, float]:
    """Median ms of each phase over ``steps`` training steps of the composed config."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"trainer.batch_size={batch}",
                                          "run_dir=/tmp/unused"])  # fmt: skip
    settings = instantiate(cfg.trainer)
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    loss_fn = instantiate(cfg.loss)
    optimizer = OptimizerSettings(
        instantiate(cfg.optim.optimizer),
        cfg.optim.optimizer.lr,
        tuple(cfg.optim.no_decay or ()),
        cfg.optim.get("base_batch"),
    ).build(model, batch)
    loader = train_loader(instantiate(cfg.data.train), settings, torch.device("cpu"))
    loader.sampler.set_epoch(0)
    loader.dataset.set_epoch(0)
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    batches = iter(loader)
    for i in range(steps + 2):
        t0 = time.perf_counter()
        batch_ = next(batches)
        t1 = time.perf_counter()
        heatmaps = model(batch_.image)
        t2 = time.perf_counter()
        loss = loss_fn(heatmaps, batch_.target, batch_.target_weight)
        t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        if i >= 2:  # warm-up steps (first batches, allocator, lazy init) are not measured
            marks = (t0, t1, t2, t3, t4, t5)
            for phase, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True):
                times[phase].append((b - a) * 1e3)
    del batches, loader  # stop the workers before the next measurement
    return {p: statistics.median(v) for p, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="the demo model only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    setups = dict(list(SETUPS.items())[:1]) if args.quick else SETUPS
    print("| model | loss | " + " | ".join(f"{p} ms" for p in PHASES) + " | step ms | loss share |")
    print("|---|---|" + "---:|" * (len(PHASES) + 2))
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, 256, 2, seed=0, workers=1)
        for name, (overrides, batch) in setups.items():
            step = {}
            for loss in ("mse", "sinkhorn"):
                ms = measure([f"experiment=demo/synthetic_{loss}", f"data.root={tmp}", *overrides],
                             batch, args.steps)  # fmt: skip
                step[loss] = sum(ms.values())
                cells = " | ".join(f"{ms[p]:.1f}" for p in PHASES)
                label = "MSE" if loss == "mse" else "matching"
                print(f"| {name} | {label} | {cells} | {step[loss]:.1f} | "
                      f"{ms['loss'] / step[loss]:.1%} |")  # fmt: skip
            extra = step["sinkhorn"] / step["mse"] - 1
            print(f"| {name} | matching over MSE | | | | | | {extra:+.1%} | |")
            if name.startswith("demo"):
                verdicts.append(extra <= 0.05)
    print(f"matching loss adds <= 5% to a demo step: {'PASS' if all(verdicts) else 'FAIL'}")


if __name__ == "__main__":
    main()
