"""Do a loss's gradients tell nearby joints apart? The cosine between the joints' gradients on the
head's last layer, on one training batch, for several losses at the same weights (issue 13).

    python scripts/head_gradients.py [--init-from RUN/last.pth] [--batches 4] [overrides...]

Each loss (MSE on Gaussian heatmaps; the matching loss with a softplus head, input px; with
standardised maps; the expected distance) is computed on the same crops with the same network; the
gradient of each joint's own loss term with respect to the last layer's weight row of that joint is
taken, and the table gives the cosine between the rows' gradients (averaged over batches). Nearby
joints whose gradients have cosine ~1 receive the same update: their rows align and their maps
merge (``results/relu.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from posematch.types import Batch

REPO = Path(__file__).resolve().parents[1]

ARMS = {
    "MSE (Gaussian sigma 2, official head)": ["loss=mse", "codec=gaussian", "model.head.activation=none"],
    "matching, softplus head, input px": ["loss=sinkhorn_input_px", "codec=dots_mass", "model.head.activation=softplus"],
    "matching, standardised maps (zscore)": ["loss=sinkhorn", "codec=dots_mass", "model.head.activation=zscore"],
    "expected distance, softplus head": ["loss=expected_distance", "codec=dots_mass", "model.head.activation=softplus"],
}  # fmt: skip
BASE = ["data=dlc_openfield", "model=efficientnet_lite0", "data.num_folds=5", "data.fold=0"]


def row_gradients(cfg, init_from: str | None, batches: int, seed: int) -> torch.Tensor:
    """(K, K) mean cosine between the joints' last-layer row gradients of their own loss terms."""
    torch.manual_seed(seed)
    if init_from:
        cfg.model.init_from = init_from
        cfg.model.pretrained = None
    model = instantiate(cfg.model).train()
    loss_fn = instantiate(cfg.loss)
    dataset = instantiate(cfg.data.train)
    loader = DataLoader(
        dataset, batch_size=16, shuffle=True, collate_fn=Batch.collate,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    weight = model.head.final_layer.weight
    total, n = None, 0
    for i, batch in enumerate(loader):
        if i == batches:
            break
        heatmaps = model(batch.image)
        k = heatmaps.shape[1]
        grads = []
        for j in range(k):
            mask = torch.zeros_like(batch.target_weight)
            mask[:, j] = batch.target_weight[:, j]
            value = loss_fn(heatmaps, batch.target, mask)
            (g,) = torch.autograd.grad(value, weight, retain_graph=True)
            grads.append(g[j].flatten())
        unit = torch.nn.functional.normalize(torch.stack(grads), dim=1)
        cos = unit @ unit.T
        total = cos if total is None else total + cos
        n += 1
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--init-from", default=None, help="weights of the whole model (a run's last.pth)"
    )
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(
        "| loss | "
        + " | ".join(["snout-leftear", "snout-rightear", "leftear-rightear", "snout-tailbase"])
        + " |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, arm in ARMS.items():
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*BASE, *arm, *args.overrides])
        cos = row_gradients(cfg, args.init_from, args.batches, seed=0)
        pairs = [(0, 1), (0, 2), (1, 2), (0, 3)]
        print(f"| {label} | " + " | ".join(f"{cos[a, b]:.3f}" for a, b in pairs) + " |")


if __name__ == "__main__":
    main()
