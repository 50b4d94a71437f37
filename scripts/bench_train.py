"""Training-step time with each loss, split into its phases, and the matching loss's share (issue 10).

For the demo's model and recipe (``experiment=demo/synthetic_*``: HRNet-tiny, 128x96 input, 32x24
heatmaps, batch 16, 2 loader workers) and for HRNet-W32 at 256x192 (64x48 heatmaps, batch 4 on a
CPU), both losses with the same model, data, optimizer and batches (the MSE baseline with its
Gaussian codec, the matching loss with its dots codec) run ``--steps`` measured training steps after
two warm-up steps, through the real pipeline, loader and optimizer, interleaved step by step (in
alternating order) so that both see the same drift of the machine's load. Each step is split into

    data (waiting for the loader) | forward | loss | loss backward | backward | optimizer

(medians in ms; "loss backward" ends when the heatmaps' gradient exists, "backward" is the model's),
and the table prints the loss's share of the step (its forward and backward), the matching
step's time over its MSE neighbour's, and the matching loss's own time (its forward and backward
less MSE's) over the MSE step, each the median over the rounds. Target on CPU: the matching loss
adds <= 5% to a demo step, judged on its own time: the whole steps also differ outside the loss
(the matching runs' model forward measures shorter; they differ in the head's activation and in
the codec their loader workers run). The script is a report: PASS/FAIL beside the target, exit 0.
The machine's load is printed first.

Usage: python scripts/bench_train.py [--steps N] [--quick] [--setups demo,EfficientNet]
(--quick: the demo model only; --setups: the setups whose names start so)
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

from posematch.engine.loaders import train_loader
from posematch.engine.optim import OptimizerSettings
from posematch.synthetic import generate
from posematch.types import Batch

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ("data", "forward", "loss", "loss backward", "backward", "optimizer")
LOSSES = ("mse", "sinkhorn")
SETUPS = {  # name: (overrides, batch size)
    "demo (HRNet-tiny 128x96)": ([], 16),
    "HRNet-W32 256x192": (
        ["model=hrnet_w32", "data.input_size=[192,256]", "data.heatmap_size=[48,64]"],
        4,
    ),
    # The ImageNet start (issue 12) at the demo's input and batch: stride-32 and stride-16 cuts.
    "EfficientNet-Lite0 128x96": (["model=efficientnet_lite0"], 16),
    "EfficientNet-Lite0-s16 128x96": (["model=efficientnet_lite0_s16"], 16),
}


class Runner:
    """One loss's training set-up (model, loss, optimizer, loader) from the composed config,
    stepped one training step at a time."""

    def __init__(self, overrides: list[str], batch: int) -> None:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, f"trainer.batch_size={batch}",
                                              "run_dir=/tmp/unused"])  # fmt: skip
        settings = instantiate(cfg.trainer)
        torch.manual_seed(0)
        self.model = instantiate(cfg.model).train()
        self.loss_fn = instantiate(cfg.loss)
        self.optimizer = OptimizerSettings(
            instantiate(cfg.optim.optimizer),
            cfg.optim.optimizer.lr,
            tuple(cfg.optim.no_decay or ()),
            cfg.optim.get("base_batch"),
        ).build(self.model, batch)
        self.loader = train_loader(instantiate(cfg.data.train), settings, torch.device("cpu"))
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self.loader.sampler.set_epoch(self.epoch)
        self.loader.dataset.set_epoch(self.epoch)
        self.batches = iter(self.loader)

    def _next(self) -> Batch:
        try:
            return next(self.batches)
        except StopIteration:  # the bench's small data set: the next epoch
            self.epoch += 1
            self._start_epoch()
            return next(self.batches)

    def step(self) -> dict[str, float]:
        """One training step; ms per phase. The loss's backward ends when the heatmaps' gradient
        is there (a hook), the model's backward when ``backward()`` returns."""
        marks = {"start": time.perf_counter()}
        batch = self._next()
        marks["data"] = time.perf_counter()
        heatmaps = self.model(batch.image)
        heatmaps.register_hook(lambda g: marks.__setitem__("loss backward", time.perf_counter()))
        marks["forward"] = time.perf_counter()
        loss = self.loss_fn(heatmaps, batch.target, batch.target_weight)
        marks["loss"] = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        marks["zero"] = time.perf_counter()
        loss.backward()
        marks["backward"] = time.perf_counter()
        self.optimizer.step()
        marks["optimizer"] = time.perf_counter()
        ms = {
            "data": marks["data"] - marks["start"],
            "forward": marks["forward"] - marks["data"],
            "loss": marks["loss"] - marks["forward"],
            "loss backward": marks["loss backward"] - marks["zero"],
            "backward": marks["backward"] - marks["loss backward"],
            "optimizer": marks["optimizer"] - marks["backward"] + marks["zero"] - marks["loss"],
        }
        return {k: v * 1e3 for k, v in ms.items()}

    def close(self) -> None:
        # The loader's persistent workers stop when the loader itself goes (it keeps its iterator):
        # left to interpreter exit, their shutdown can hang.
        del self.batches, self.loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="the demo model only")
    parser.add_argument("--setups", default=None, help="comma-separated name prefixes to run")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    setups = dict(list(SETUPS.items())[:1]) if args.quick else SETUPS
    if args.setups:
        wanted = tuple(args.setups.split(","))
        setups = {k: v for k, v in setups.items() if k.startswith(wanted)}
    print("| model | loss | " + " | ".join(f"{p} ms" for p in PHASES) + " | step ms | loss share |")
    print("|---|---|" + "---:|" * (len(PHASES) + 2))
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, 256, 2, seed=0, workers=1)
        for name, (overrides, batch) in setups.items():
            runners = {
                loss: Runner(
                    [f"experiment=demo/synthetic_{loss}", f"data.root={tmp}", *overrides], batch
                )
                for loss in LOSSES
            }
            times: dict[str, list[dict[str, float]]] = {loss: [] for loss in LOSSES}
            for i in range(args.steps + 2):
                # Interleaved, in alternating order: both losses see the same drift of the load.
                for loss in LOSSES if i % 2 == 0 else LOSSES[::-1]:
                    ms = runners[loss].step()
                    if i >= 2:  # warm-up steps (first batches, allocator, lazy init) not measured
                        times[loss].append(ms)
            for runner in runners.values():
                runner.close()
            for loss in LOSSES:
                med = {p: statistics.median(t[p] for t in times[loss]) for p in PHASES}
                total = statistics.median(sum(t.values()) for t in times[loss])
                share = (med["loss"] + med["loss backward"]) / total
                cells = " | ".join(f"{med[p]:.1f}" for p in PHASES)
                label = "MSE" if loss == "mse" else "matching"
                print(f"| {name} | {label} | {cells} | {total:.1f} | {share:.1%} |")
            # Each round's matching step over its MSE neighbour, then the median of those ratios.
            ratios = [sum(b.values()) / sum(a.values())
                      for a, b in zip(times["mse"], times["sinkhorn"], strict=True)]  # fmt: skip
            extra = statistics.median(ratios) - 1
            print(f"| {name} | matching over MSE (median of {len(ratios)} interleaved rounds) |"
                  + " |" * len(PHASES) + f" {extra:+.1%} | |")  # fmt: skip
            # The loss's own addition: its forward + backward over MSE's, per MSE step. The whole
            # steps also differ where the loss does not run (the model's forward and backward
            # measure shorter in the matching runs: another head activation, another codec in
            # the loader workers), so the verdict is on this one.
            own = [(b["loss"] + b["loss backward"] - a["loss"] - a["loss backward"]) / sum(a.values())
                   for a, b in zip(times["mse"], times["sinkhorn"], strict=True)]  # fmt: skip
            added = statistics.median(own)
            print(f"| {name} | the matching loss's own time over the MSE step |"
                  + " |" * len(PHASES) + f" {added:+.1%} | |")  # fmt: skip
            if name.startswith("demo"):
                verdicts.append(added <= 0.05)
    print(f"matching loss adds <= 5% to a demo step (its own time): "
          f"{'PASS' if all(verdicts) else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    main()
