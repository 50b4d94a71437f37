"""Per-step traces of the paper's relu head under the matching loss (issue 13, item 1).

    python scripts/relu_trace.py [--steps 300] [--arms adam1e-3,sgd] [--out results/relu_trace.json]

Every arm trains the same network from the same start on the same batches (the synthetic demo data,
128x96, batch 16, seed 0; EfficientNet-Lite0 with its ImageNet weights and a new SimpleBaseline head
by default) with the matching loss on relu heatmaps (cost and reg in heatmap pixels, the paper's
reading), and only the optimizer or the suppliers' activation changes, or (DM-Count's arms) the
loss gains DM-Count's regularisers. Each step records the transport loss (without regularisers),
the share of dead heatmaps (no positive value), the share of positive pixels, the mean of the
final layer's bias, the median heatmap maximum and the median unnormalised mass sum relu(H)
(over the labelled joints). Traces from before the regularisers (results/relu_trace.json) hold the
whole loss, which for their arms is the transport term. The traces go to ``--out`` (JSON, one list
per arm) and ``results/relu_trace.png``. A diagnostic, not a training recipe: a plain loop, no
validation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from posematch.types import Batch

REPO = Path(__file__).resolve().parents[1]
BASE = [
    "experiment=demo/synthetic_base",
    "model=efficientnet_lite0",
    "model.head.activation=none",
    "codec=dots",
    "loss=sinkhorn",
    "trainer.warmup_iters=0",
]


def _adam(head: list[torch.nn.Parameter], other: list[torch.nn.Parameter]) -> torch.optim.Adam:
    """The paper's optimizer: Adam at 1e-3 over every parameter."""
    return torch.optim.Adam([*head, *other], lr=1e-3)


# name -> (extra overrides, optimizer factory over (head params, other params))
ARMS = {
    "adam1e-3": ([], _adam),
    "adam1e-4": ([], lambda h, o: torch.optim.Adam([*h, *o], lr=1e-4)),
    "adam1e-5": ([], lambda h, o: torch.optim.Adam([*h, *o], lr=1e-5)),
    "sgd1e-4": ([], lambda h, o: torch.optim.SGD([*h, *o], lr=1e-4, momentum=0.9)),
    "sgd": ([], lambda h, o: torch.optim.SGD([*h, *o], lr=1e-2, momentum=0.9)),
    "adam_headsgd": (
        [],
        lambda h, o: _Pair(torch.optim.SGD(h, lr=1e-2, momentum=0.9), torch.optim.Adam(o, lr=1e-3)),
    ),
    "adam_nobias": ([], _adam),
    # The final layer at a hundredth of the rate (optim.lr_mult {head.final_layer: 0.01}).
    "adam_headlr": (
        [],
        lambda h, o: torch.optim.Adam([{"params": h, "lr": 1e-5}, {"params": o}], lr=1e-3),
    ),
    "softplus": (["model.head.activation=softplus"], _adam),
    # DM-Count's regularisers on the relu maps (posematch/losses/mass_terms.py) at its weights
    # relative to the transport term (mass 10, total variation 0.1). Its count is 1 for one dot;
    # a pose map has no natural scale, so the mass target is also set 10x and 100x higher, and
    # the mass term runs alone at target 100, at that weight and weaker. A change to the loss,
    # not to the activation or the optimizer.
    "dmcount": (["loss.mass_weight=10", "loss.tv_weight=0.1"], _adam),
    "dmcount_t10": (["loss.mass_weight=10", "loss.tv_weight=0.1", "loss.mass_target=10"], _adam),
    "dmcount_t100": (["loss.mass_weight=10", "loss.tv_weight=0.1", "loss.mass_target=100"], _adam),
    "mass_t100": (["loss.mass_weight=10", "loss.mass_target=100"], _adam),
    # The mass term weaker, so that the transport term can sharpen the map under the anchor.
    "mass1_t100": (["loss.mass_weight=1", "loss.mass_target=100"], _adam),
    "mass0.1_t100": (["loss.mass_weight=0.1", "loss.mass_target=100"], _adam),
    # Whether a weaker or lower anchor lets the transport term sharpen the live maps (at target
    # 100 and weight 0.1 they live but stay broad: results/relu.md), or lets them die.
    "mass0.01_t100": (["loss.mass_weight=0.01", "loss.mass_target=100"], _adam),
    "mass0.1_t10": (["loss.mass_weight=0.1", "loss.mass_target=10"], _adam),
    # Both died; the reading that the anchor's push per pixel (weight) must beat the transport
    # term's drift (which scales as 1 / mass, the target) predicts that weight x target decides:
    # the same product, 10, at other weights and targets.
    "mass1_t10": (["loss.mass_weight=1", "loss.mass_target=10"], _adam),
    "mass0.01_t1000": (["loss.mass_weight=0.01", "loss.mass_target=1000"], _adam),
    # Both lost maps. The reading they leave: the weight must lift the mass in the first steps, and
    # the target must not lie far below the first steps' overshoot. It predicts this arm lives.
    "mass0.1_t1000": (["loss.mass_weight=0.1", "loss.mass_target=1000"], _adam),
    # The same with the studies' warm-up (x0.001 -> x1 over the first 100 steps): whether small
    # first steps let more maps die before the anchor holds them (results/relu.md).
    "mass0.1_t100_warm": (
        ["loss.mass_weight=0.1", "loss.mass_target=100"],
        lambda h, o: _Warm(_adam(h, o), iters=100, ratio=1e-3),
    ),
}


class _Pair:
    """Two optimizers stepped together (one for the head's final layer, one for the rest)."""

    def __init__(self, *opts: torch.optim.Optimizer) -> None:
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.opts:
            o.step()


class _Warm:
    """An optimizer with the trainer's per-step linear warm-up (``posematch.engine.optim.warmup``):
    the lr rises from ``ratio`` times its value to its value over the first ``iters`` steps."""

    def __init__(self, opt: torch.optim.Optimizer, iters: int, ratio: float) -> None:
        from posematch.engine.optim import warmup

        self.opt, self.sched = opt, warmup(opt, iters, ratio)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.opt.step()
        self.sched.step()


def trace(arm: str, steps: int, data_root: str, device: str = "cpu") -> list[dict[str, float]]:
    extra, make = ARMS[arm]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*BASE, *extra, f"data.root={data_root}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    final = model.head.final_layer
    if arm == "adam_nobias":  # the bias held at 0: only the weights can lower the map
        final.bias.requires_grad_(False)
    loss_fn = instantiate(cfg.loss)
    loss_fn_plain = instantiate(cfg.loss, mass_weight=0.0, tv_weight=0.0)
    dataset = instantiate(cfg.data.train)
    dataset.set_epoch(0)
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, generator=gen, num_workers=2,
                        collate_fn=Batch.collate, drop_last=True, persistent_workers=True)  # fmt: skip
    head = [p for p in final.parameters() if p.requires_grad]
    other = [p for n, p in model.named_parameters() if not n.startswith("head.final_layer.")]
    opt = make(head, other)
    model.train()
    out: list[dict[str, float]] = []
    epoch = 0
    while len(out) < steps:
        dataset.set_epoch(epoch)
        for batch in loader:
            heatmaps = model(batch.image.to(device))
            weights = batch.target_weight.to(device)
            dots = batch.target.to(device)
            loss = loss_fn(heatmaps, dots, weights)
            # The transport term alone, comparable across arms (DM-Count's arms add their terms).
            regularised = loss_fn.mass_weight > 0 or loss_fn.tv_weight > 0
            with torch.no_grad():
                transport = loss_fn_plain(heatmaps, dots, weights) if regularised else loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            bias_grad = final.bias.grad if final.bias.grad is not None else torch.zeros(1)
            opt.step()
            h = heatmaps.detach()
            used = weights > 0
            dead = (h.flatten(2).amax(2) <= 0) & used
            out.append({
                "loss": float(transport.detach()),
                # The median of the maps' unnormalised mass, sum relu(H), over the used joints.
                "mass_median": float(h.relu().flatten(2).sum(2)[used].median()),
                "dead_share": float(dead.sum() / used.sum().clamp_min(1)),
                "positive_pixels": float((h > 0).float().mean()),
                "bias_mean": float(final.bias.detach().mean()),
                # Of the joints whose bias gets a gradient (a dead map's gets none), the share
                # whose gradient says "lower the whole map".
                "bias_grad_positive": float((bias_grad > 0).sum() / (bias_grad != 0).sum().clamp_min(1)),
                "max_median": float(h.flatten(2).amax(2).median()),
            })  # fmt: skip
            if len(out) >= steps:
                break
        epoch += 1
    return out


def plot(traces: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Dead share, loss and the bias-gradient sign against the step, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("dead_share", "dead heatmaps (share)"), ("loss", "matching loss (heatmap px)"),
            ("bias_grad_positive", "live joints whose bias gradient lowers the map"))  # fmt: skip
    if all("mass_median" in t[0] for t in traces.values()):  # traces from before it lack it
        keys = (*keys, ("mass_median", "median map mass, sum relu(H)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    colours = {arm: f"C{i}" for i, arm in enumerate(sorted(traces))}
    for ax, (key, title) in zip(axes, keys, strict=True):
        for arm, trace in sorted(traces.items()):
            values = [t[key] for t in trace]
            if key == "bias_grad_positive":
                if arm == "adam_nobias":  # no bias
                    continue
                # Steps while most joints live (a map with one positive pixel has no gradient,
                # so the die-off's last maps say little); a 10-step running mean of those.
                live = [
                    v if t["dead_share"] < 0.5 else float("nan")
                    for v, t in zip(values, trace, strict=True)
                ]
                values = [sum(w) / len(w) if (w := [x for x in live[max(0, i - 9) : i + 1]
                          if x == x]) else float("nan") for i in range(len(live))]  # fmt: skip
            ax.plot(values, label=arm, lw=1, color=colours[arm])
        if key == "mass_median":
            ax.set_yscale("symlog", linthresh=1.0)  # 0 (dead) to about 100 (the anchored arms)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--out", default=str(REPO / "results" / "relu_trace.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", default=None, help="write the figure of --out's traces here")
    args = parser.parse_args()
    path = Path(args.out)
    done = json.loads(path.read_text()) if path.exists() else {}
    if args.plot:
        plot(done, Path(args.plot))
        return
    for arm in args.arms.split(","):
        if len(done.get(arm, [])) >= args.steps:
            continue
        start = time.time()
        done[arm] = trace(arm, args.steps, args.data, args.device)
        path.write_text(json.dumps(done))
        last = done[arm][-1]
        print(f"{arm}: {time.time() - start:.0f} s, last step: " +
              ", ".join(f"{k} {v:.4g}" for k, v in last.items()), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
